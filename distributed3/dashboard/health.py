"""An HTTP endpoint beside a center or a worker, for load balancers and Kubernetes probes.

::

    GET /health   200 while the process's event loop answers (liveness)
    GET /ready    200 once it can do its job, 503 before (readiness): a center that
                  serves, a worker registered with its center now

Both answer a small JSON document (role, address, workers or tasks), metadata only:
nothing here runs code or is unpickled, so it needs no secret.  ``dcenter`` and
``dworker`` start it with ``--http-port``; it listens on the server's own host.

>>> import asyncio, json, urllib.request
>>> from distributed3.center import Center
>>> async def demo():
...     center = await Center().start(host="127.0.0.1", port=0)
...     http, port = start_http(center, "127.0.0.1", 0)
...     loop = asyncio.get_running_loop()
...     url = f"http://127.0.0.1:{port}/ready"
...     body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(url).read())
...     http.stop()
...     await center.close()
...     return json.loads(body)["role"]
>>> asyncio.run(demo())
'center'
"""
import json
import logging

import tornado.httpserver
import tornado.netutil
import tornado.web

from ..utils import format_address
from ..worker.worker import Worker

logger = logging.getLogger(__name__)


def state(server):
    """``(ready, document)``: whether ``server`` can do its job now, and what it reports."""
    doc = {"address": format_address(server.address) if server.address else None}
    if isinstance(server, Worker):
        ready = server.center_connected and server.retiring is None
        doc.update(role="worker", center=format_address(server.center_address),
                   registered=server.center_connected, retiring=server.retiring,
                   active=server.active, ncores=server.ncores)  # fmt: skip
    else:
        ready = server.address is not None
        doc.update(role="center", workers=len(server.ncores), cores=sum(server.ncores.values()))
    return ready, doc


class Probe(tornado.web.RequestHandler):
    def initialize(self, server, readiness):
        self.server, self.readiness = server, readiness

    def get(self):
        ready, doc = state(self.server)
        ok = ready or not self.readiness
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": "ok" if ok else "not ready", **doc}))


def _log(handler):
    # a probe every few seconds is not news; a refused or failed request is
    level = logging.DEBUG if handler.get_status() < 400 else logging.INFO
    logger.log(level, "%d %s %s", handler.get_status(), handler.request.method, handler.request.uri)


def start_http(server, host, port):
    """Serve ``/health`` and ``/ready`` for ``server`` on ``host:port`` (0: any free port);
    returns ``(http_server, port)``.  Stop it with ``http_server.stop()``."""
    app = tornado.web.Application([
        (r"/health", Probe, {"server": server, "readiness": False}),
        (r"/ready", Probe, {"server": server, "readiness": True}),
    ], log_function=_log)  # fmt: skip
    http = tornado.httpserver.HTTPServer(app)
    sockets = tornado.netutil.bind_sockets(port, address=host)
    http.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    logger.info("Health endpoint at http://%s/health", format_address((host, port)))
    return http, port
