"""The dashboard's web server, in the center's own process and event loop.

::

    GET /status            the pages (static/index.html; tabs: cluster, task stream,
                           throughput, data, a worker's page)
    GET /events            server-sent events: a snapshot every half second
    GET /api/keys?prefix=  where keys live, by key or prefix
    GET /api/biggest       the biggest keys
    GET /api/worker?address=host:port   a worker's gauges, log lines and errors
    GET /metrics           Prometheus text format (needs prometheus_client)
    GET /health, /ready    probes (no token)

Metadata only: no handler runs code or unpickles anything.  When the cluster has a
secret, every page needs a token derived from it (:func:`token_for`), given once as
``?token=...`` (a cookie keeps it); ``/metrics`` also takes it as a bearer token, or
needs none with ``metrics_open``.
"""
import asyncio
import heapq
import hmac
import json
import logging
import os
import time

import tornado.web

from .health import Probe
from ..core.security import dashboard_link, token_for
from ..utils import format_address, parse_address
from .snapshot import snapshot, worker_page

logger = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "distributed3_token"
PUSH_EVERY = 0.5  # seconds between two snapshots on /events


class Guarded(tornado.web.RequestHandler):
    """A handler that answers only with the token (when there is one)."""

    def initialize(self, center, token, metrics_open=False):
        self.center, self.token, self.metrics_open = center, token, metrics_open

    def prepare(self):
        if self.token is None:
            return
        given = self.get_query_argument("token", None)
        bearer = self.request.headers.get("Authorization", "")
        if given is None and bearer.startswith("Bearer "):
            given = bearer[len("Bearer "):]
        if given is not None and hmac.compare_digest(given, self.token):
            self.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
            return
        cookie = self.get_cookie(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie, self.token):
            return
        self.set_status(403)
        self.finish("403: this dashboard needs its token: open the link the center printed "
                    "at its start (...?token=...), or pool.dashboard_link\n")

    def send_json(self, doc):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc, default=str))


class Page(Guarded):
    def get(self):
        self.set_header("Cache-Control", "no-store")
        with open(os.path.join(STATIC, "index.html"), "rb") as f:
            self.finish(f.read())


class Events(Guarded):
    """Server-sent events: a snapshot every half second while the page is open."""

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        after = int(self.get_query_argument("after", "0") or 0)
        try:
            while True:
                doc = snapshot(self.center, after)
                after = doc["last"]
                self.write(f"data: {json.dumps(doc, default=str)}\n\n")
                await self.flush()
                await asyncio.sleep(PUSH_EVERY)
        except tornado.iostream.StreamClosedError:
            pass  # the page went


class Snapshot(Guarded):
    def get(self):
        self.send_json(snapshot(self.center, int(self.get_query_argument("after", "0") or 0)))


class Keys(Guarded):
    """Where keys live: those equal to or starting with ``prefix`` (at most ``limit``)."""

    def get(self):
        prefix = self.get_query_argument("prefix", "")
        limit = min(int(self.get_query_argument("limit", "50")), 1000)
        center, found = self.center, []
        if prefix in center.who_has:
            found.append(prefix)
        for key in center.who_has:
            if len(found) >= limit:
                break
            if key != prefix and str(key).startswith(prefix):
                found.append(key)
        self.send_json([_key_doc(center, k) for k in found])


class Biggest(Guarded):
    def get(self):
        n = min(int(self.get_query_argument("n", "20")), 200)
        top = heapq.nlargest(n, self.center.nbytes.items(), key=lambda kv: kv[1] or 0)
        self.send_json([_key_doc(self.center, k) for k, _ in top])


class WorkerPage(Guarded):
    def get(self):
        try:
            address = parse_address(self.get_query_argument("address"))
        except ValueError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.send_json(worker_page(self.center, address))


class Metrics(Guarded):
    def prepare(self):
        if not self.metrics_open:
            super().prepare()

    def get(self):
        try:
            from .metrics import exposition
        except ImportError:
            self.set_status(501)
            self.finish("501: /metrics needs prometheus_client: pip install "
                        "'distributed3[dashboard]'\n")
            return
        body, content_type = exposition(self.center)
        self.set_header("Content-Type", content_type)
        self.finish(body)


def _key_doc(center, key):
    return {"key": key, "nbytes": center.nbytes.get(key),
            "holders": [format_address(w) for w in center.who_has.get(key, ())]}


def make_app(center, secret=None, metrics_open=False):
    """The dashboard's ``tornado.web.Application`` for ``center``."""
    guarded = {"center": center, "token": token_for(secret), "metrics_open": metrics_open}
    return tornado.web.Application([
        (r"/", tornado.web.RedirectHandler, {"url": "/status", "permanent": False}),
        (r"/status", Page, guarded),
        (r"/events", Events, guarded),
        (r"/api/snapshot", Snapshot, guarded),
        (r"/api/keys", Keys, guarded),
        (r"/api/biggest", Biggest, guarded),
        (r"/api/worker", WorkerPage, guarded),
        (r"/metrics", Metrics, guarded),
        (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": STATIC}),
        (r"/health", Probe, {"server": center, "readiness": False}),
        (r"/ready", Probe, {"server": center, "readiness": True}),
    ], log_function=_log)  # fmt: skip


def _log(handler):
    level = logging.DEBUG if handler.get_status() < 400 else logging.INFO
    logger.log(level, "%d %s %s", handler.get_status(), handler.request.method,
               handler.request.path)  # fmt: skip


def start_dashboard(center, host, port, secret=None, metrics_open=False):
    """Serve the dashboard of ``center`` on ``host:port`` (0: any free port); returns
    ``(http_server, port, link)``, the link with its token."""
    import tornado.httpserver
    import tornado.netutil

    http = tornado.httpserver.HTTPServer(make_app(center, secret, metrics_open))
    sockets = tornado.netutil.bind_sockets(port, address=host)
    http.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    link = dashboard_link(host, port, secret)
    center.dashboard = {"host": host, "port": port, "started": time.time()}
    return http, port, link
