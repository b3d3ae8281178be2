"""What the ``dcenter`` and ``dworker`` processes share: the options every server takes
(host, secret, TLS, log level), reading the secret and TLS files, refusing an exposed
listener without a secret, logging, and serving until a signal or the parent's end.

>>> import argparse
>>> parser = argparse.ArgumentParser(); add_common_options(parser)
>>> read_secret(parser.parse_args(["--secret-file", "/nonexistent"]))
Traceback (most recent call last):
...
SystemExit: error: cannot read secret file /nonexistent: No such file or directory
"""
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
import threading

from ..core.admission import raise_open_files_limit
from ..core.security import TLS, read_secret_file
from ..exceptions import DistributedError
from ..utils import is_loopback
from ..worker import relay
from ..worker.worker import Worker
from ..dashboard.health import start_http

logger = logging.getLogger(__name__)


def add_common_options(parser, host_default="loopback"):
    parser.add_argument("--host", default=None,
                        help=f"address to listen on (default: {host_default})")  # fmt: skip
    parser.add_argument("--secret-file", metavar="PATH",
                        help="file holding the cluster's shared secret "
                             "(default: $DISTRIBUTED3_SECRET)")  # fmt: skip
    parser.add_argument("--secret-stdin", action="store_true",
                        help="read the secret from standard input's first line, and stop "
                             "when standard input closes (how dssh starts processes)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback without a secret (dangerous)")  # fmt: skip
    parser.add_argument("--tls-cert", metavar="PATH", help="this process's TLS certificate (PEM)")
    parser.add_argument("--tls-key", metavar="PATH", help="its private key (PEM)")
    parser.add_argument("--tls-ca", metavar="PATH",
                        help="CA that peers' certificates must be signed by (mutual TLS)")  # fmt: skip
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])  # fmt: skip


def health_endpoint(host, port):
    """``http`` for :func:`serve`: a worker's ``/health`` and ``/ready`` on ``host:port``
    (``dworker --http-port``), or None."""
    if port is None:
        return None

    def start(server):
        try:
            return start_http(server, host, port)[0]
        except OSError as e:
            raise OSError(f"cannot serve the health endpoint on port {port}: "
                          f"{e.strerror}") from e

    return start


def read_tls(args, server=True):
    """A :class:`TLS` from ``--tls-cert/--tls-key/--tls-ca``, or None when none is given."""
    if not (args.tls_cert or args.tls_key or args.tls_ca):
        return None
    if server and not args.tls_cert:
        sys.exit("error: --tls-cert (and --tls-key) are needed to serve TLS")
    tls = TLS(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
    try:
        tls.server_context()
        tls.client_context()
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        sys.exit(f"error: cannot load TLS files: {e}")
    return tls


def read_secret(args):
    """The secret from ``--secret-stdin``, ``--secret-file`` or ``$DISTRIBUTED3_SECRET``,
    as bytes, or None."""
    if getattr(args, "secret_stdin", False):
        return read_secret_from_stdin()
    if args.secret_file:
        try:
            return read_secret_file(args.secret_file)
        except OSError as e:
            sys.exit(f"error: cannot read secret file {args.secret_file}: {e.strerror}")
        except ValueError as e:
            sys.exit(f"error: {e}")
    env = os.environ.get("DISTRIBUTED3_SECRET")
    return env.encode() if env else None


def read_secret_from_stdin():
    """The secret on standard input's first line, as a launcher over SSH sends it; then
    this process stops (SIGTERM) when standard input closes: the launcher is gone.  The
    secret goes on in the environment, to the processes this one starts."""
    secret = sys.stdin.buffer.readline().strip()
    if not secret:
        sys.exit("error: --secret-stdin: standard input had no secret on its first line")
    os.environ["DISTRIBUTED3_SECRET"] = secret.decode()

    def watch():
        while sys.stdin.buffer.read(1 << 16):
            pass
        logger.warning("Standard input closed: the launcher is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="distributed3-stdin").start()
    return secret


def check_exposure(host, secret, insecure):
    """Refuse a non-loopback listener without a secret unless ``--insecure``."""
    if is_loopback(host) or secret:
        return
    if not insecure:
        sys.exit(
            f"error: refusing to listen on {host} without a secret: anyone who can reach "
            "it could run code here. Give --secret-file PATH (or DISTRIBUTED3_SECRET), "
            "or --insecure to accept that risk."
        )
    logger.warning("INSECURE: listening on %s without a secret; anyone who can reach "
                   "this port can run code on this machine", host)  # fmt: skip


def setup_logging(level):
    """Logging to stderr at ``level``; and, as every server process starts here, the
    open files limit raised to the hard one (a socket per peer: see core.admission)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(name)s - %(levelname)s - %(message)s",
        stream=sys.stderr,
    )
    raise_open_files_limit()


def listen(host, port, fallback_port):
    """A socket listening on ``host:port``; on a free port if that one is taken and
    ``fallback_port``.

    >>> import socket
    >>> with socket.socket() as taken:
    ...     taken.bind(("127.0.0.1", 0)); taken.listen()
    ...     with listen("127.0.0.1", taken.getsockname()[1], fallback_port=True) as sock:
    ...         sock.getsockname()[1] != taken.getsockname()[1]
    True
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        if e.errno != errno.EADDRINUSE or not fallback_port:
            raise
        logger.info("Port %d is in use; picking a free one", port)
        return socket.create_server((host, 0), family=family, backlog=1024)


async def serve(server, host, port, fallback_port, parent_pid=None, before_close=None,
                 sockets=None, http=None):  # fmt: skip
    """Start ``server``, then wait for SIGINT / SIGTERM (or the parent dying) and close it
    (after awaiting ``before_close()``, if given).  ``http(server)``, when given, starts
    its HTTP side (health endpoint, dashboard) once it serves -- a worker's before it
    starts, so that it answers ``/health`` while it waits for its center
    (``--center-wait``), and ``/ready`` with 503 -- and returns what to ``stop()`` at
    the end."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # before starting: a signal right after the server says it is up stops it cleanly,
    # and one while it starts (a center that does not answer, say) ends that at once
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if sockets is None:
        sockets = [listen(host, port, fallback_port)]
    for sock in sockets:
        sock.setblocking(False)
    early = http is not None and isinstance(server, Worker)
    if early:
        try:
            http = http(server)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
    stopped = asyncio.ensure_future(stop.wait())
    starting = asyncio.ensure_future(server.start(host, sockets=sockets))
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done() or starting.exception() is not None:
        starting.cancel()
        stopped.cancel()
        await asyncio.gather(starting, stopped, return_exceptions=True)
        if early:
            http.stop()
        await server.close()
        if not starting.cancelled():
            starting.result()  # a failed start says why
        return
    if http is not None and not early:
        try:
            http = http(server)
        except OSError:
            await server.close()
            raise
    watchers = [stopped]
    if isinstance(server, Worker):
        watchers.append(asyncio.ensure_future(server.finished.wait()))
    if parent_pid:
        watchers.append(asyncio.ensure_future(_watch_parent(parent_pid)))
    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
    for w in watchers:
        w.cancel()
    try:
        if before_close is not None:
            await before_close()
    finally:
        if http is not None:
            http.stop()
        await server.close()


async def _watch_parent(pid):
    while os.getppid() == pid:
        await asyncio.sleep(0.5)
    logger.warning("Parent process %d is gone; shutting down", pid)


def run(main, worker=False):
    """Run the coroutine function ``main`` until it ends; a ``worker`` process's loop
    is relayed between its task threads (see :mod:`distributed3.worker.relay`)."""
    try:
        if worker:
            relay.run(main())
        else:
            asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except (OSError, TimeoutError, DistributedError) as e:
        logger.error("%s", e)
        sys.exit(1)
