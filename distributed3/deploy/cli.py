"""The ``dcenter`` and ``dworker`` executables: parse arguments, set up logging, run.

::

    $ dcenter                         # Started center at 127.0.0.1:8787
    $ dworker 127.0.0.1:8787          # Start worker at 127.0.0.1:<port>
                                      # Register with center at 127.0.0.1:8787

Both read the cluster's secret from ``--secret-file PATH`` or the
``DISTRIBUTED3_SECRET`` environment variable, and refuse to listen on a
non-loopback address without one unless given ``--insecure``.
``python -m distributed3.deploy.cli center|worker ...`` runs the same code.  This
module holds ``dcenter`` (and the workers it forks for ``Pool()``); ``dworker`` is in
:mod:`.worker_cli`, what both share in :mod:`.serving`.
"""
import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys

from ..center import Center
from ..core.security import new_secret_file
from ..utils import format_address, local_ip_for
from ..worker.store import parse_memory_limit
from ..worker.worker import Worker
from .config import apply_config
from .nanny import TERMINATE, Tender, rss_of
from .procs import fork_workers, reap, spawn, stop_pids, worker_command
from .serving import (
    add_common_options,
    check_exposure,
    listen,
    read_secret,
    read_tls,
    run,
    serve,
    setup_logging,
)
from .worker_cli import dworker

logger = logging.getLogger(__name__)

TEND_EVERY = 0.1  # seconds between looks at the forked workers (deaths, memory)

DEFAULT_CENTER_PORT = 8787
DEFAULT_DASHBOARD_PORT = 8790  # not 8787 (the center's, and dask's dashboard), nor 8265 (ray's)


def _center_parser():
    """The command line of ``dcenter``."""
    parser = argparse.ArgumentParser(prog="dcenter", description="Run a distributed3 center.")
    parser.add_argument("--port", type=int, default=DEFAULT_CENTER_PORT,
                        help=f"port to listen on (default {DEFAULT_CENTER_PORT}; "
                             "0 for any free port)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="also start N local worker processes, stopped with the center")  # fmt: skip
    parser.add_argument("--heartbeat-timeout", type=float, default=15.0, metavar="SECONDS",
                        help="remove a worker not heard from for this long (default 15)")  # fmt: skip
    parser.add_argument("--dashboard-port", type=int, default=None, metavar="PORT",
                        help=f"serve the web dashboard, /metrics and /health on this port "
                             f"(default {DEFAULT_DASHBOARD_PORT}, or any free one if that is "
                             "taken; 0: any free port)")
    parser.add_argument("--dashboard-host", default=None, metavar="HOST",
                        help="address the dashboard listens on (default: loopback)")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="serve no dashboard (and no /metrics, /health)")
    parser.add_argument("--metrics-open", action="store_true",
                        help="serve /metrics without the dashboard's token (for a scraper)")
    parser.add_argument("--new-secret", metavar="PATH",
                        help="write a fresh random secret to PATH (mode 0600), "
                             "print how to start workers with it, and use it")  # fmt: skip
    # Pool()'s local cluster: serve on a socket it already listens on, and end with it
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ncores", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker-memory-limit", default=None, help=argparse.SUPPRESS)
    add_common_options(parser)
    return parser


def _write_new_secret(args, parser):
    """``--new-secret PATH``: write a fresh secret there, say how to use it, use it."""
    if args.secret_file:
        parser.error("give either --new-secret or --secret-file, not both")
    try:
        new_secret_file(args.new_secret)
    except OSError as e:
        sys.exit(f"error: cannot create secret file {args.new_secret}: {e.strerror}")
    args.secret_file = os.path.abspath(args.new_secret)


def _say_how_to_use_the_secret(path, address):
    where = format_address(address)
    logger.info("Wrote a new secret to %s (readable by you only). Start workers with:\n"
                "    dworker %s --secret-file %s\n"
                "and connect with Pool('%s', secret=open(%r).read().strip())",
                path, where, path, where, path)  # fmt: skip


def dcenter(argv=None):
    """Entry point of ``dcenter``: run a center until interrupted."""
    parser = _center_parser()
    apply_config(parser, "center")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    host = args.host or "127.0.0.1"
    if args.new_secret:
        _write_new_secret(args, parser)
    secret = read_secret(args)
    tls = read_tls(args)
    check_exposure(host, secret, args.insecure)
    port = args.port

    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
    else:
        try:
            listener = listen(host, port, fallback_port=False)
        except OSError as e:
            hint = ""
            if e.errno == errno.EADDRINUSE:  # workers told this port would join the other
                hint = (" (another dcenter?); give --port N for another port, or --port 0 "
                        "for any free one")  # fmt: skip
            sys.exit(f"error: cannot listen on {host}:{port}: {e.strerror}{hint}")
    address = (host, listener.getsockname()[1])
    # workers are forked now, before any loop or thread exists: they start without
    # importing anything, and connect to the socket the center is about to serve
    worker_host = local_ip_for(host)  # never a wildcard: workers listen where they route
    if args.new_secret:
        _say_how_to_use_the_secret(args.secret_file, (worker_host, address[1]))
    workers = fork_workers(args.workers, lambda: _forked_worker(address, worker_host, args,
                                                                secret, tls, listener))  # fmt: skip
    failed = []

    dashboard = _dashboard(args, secret)

    async def main():
        center = Center(secret=secret, tls=tls, heartbeat_timeout=args.heartbeat_timeout,
                        telemetry=dashboard is not None)  # fmt: skip
        tender = _tender(center, address, worker_host, args)
        reaper = asyncio.ensure_future(_reap(workers, center, args.workers, failed, tender))

        async def stop_workers():  # while the center still serves: they leave cleanly
            reaper.cancel()
            await asyncio.get_running_loop().run_in_executor(None, stop_pids, workers)

        try:
            await serve(center, host, port, fallback_port=False, parent_pid=args.parent_pid,
                         before_close=stop_workers, sockets=[listener],
                         http=dashboard)  # fmt: skip
        finally:
            await stop_workers()  # no-op when they are stopped already

    run(main)
    if failed:
        sys.exit(1)


def _dashboard(args, secret):
    """``http`` for :func:`~.serving.serve`: the dashboard (:mod:`distributed3.dashboard`)
    as the options say, or None.  Refused beyond loopback without a secret, as the
    center is."""
    if args.no_dashboard:
        return None
    host = args.dashboard_host or "127.0.0.1"
    check_exposure(host, secret, args.insecure)
    port = DEFAULT_DASHBOARD_PORT if args.dashboard_port is None else args.dashboard_port

    def start(center):
        from ..dashboard.app import start_dashboard

        try:
            http, _, link = start_dashboard(center, host, port, secret, args.metrics_open)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or args.dashboard_port is not None:
                raise OSError(f"cannot serve the dashboard on {host}:{port}: {e.strerror}; "
                              "give --dashboard-port N, or --no-dashboard") from e
            logger.info("Port %d is in use; the dashboard takes a free one", port)
            http, _, link = start_dashboard(center, host, 0, secret, args.metrics_open)
        logger.info("Dashboard at %s", link)
        return http

    return start


def _tender(center, address, worker_host, args):
    """The :class:`~.nanny.Tender` of the workers ``dcenter --workers`` forked: a new one
    is a fresh interpreter (forking a process that runs threads is unsafe)."""
    limit = parse_memory_limit(args.worker_memory_limit, max(1, args.workers))
    command = worker_command(address, "--host", worker_host, "--port", "0",
                             "--ncores", str(args.worker_ncores), "--parent-pid",
                             str(os.getpid()), "--no-nanny", "--no-handoff",
                             "--log-level", args.log_level)  # fmt: skip
    if limit is not None:
        command += ["--memory-limit", str(limit)]
    for option in ("secret_file", "tls_cert", "tls_key", "tls_ca"):
        if getattr(args, option):  # the secret itself is in our environment, or a file
            command += ["--" + option.replace("_", "-"), getattr(args, option)]
    terminate = None if limit is None else rss_of(os.getpid()) + TERMINATE * limit
    return Tender(restart=lambda: spawn(command).pid, terminate=terminate,
                  report=lambda pid, cause: center.worker_died(None, worker_host, pid, cause))


def _forked_worker(center, host, args, secret, tls, listener):
    """Body of a worker forked by ``dcenter --workers``: one core (or ``--worker-ncores``),
    no hand-off (the cluster stops as a whole), ends with its center."""
    listener.close()  # the center's, not ours
    parent = os.getppid()

    async def main():
        worker = Worker(center, ncores=args.worker_ncores, secret=secret, tls=tls,
                        memory_limit=parse_memory_limit(args.worker_memory_limit,
                                                        max(1, args.workers)))  # fmt: skip
        worker.handoff_timeout = 0
        await serve(worker, host, 0, fallback_port=True, parent_pid=parent)

    run(main, worker=True)


async def _reap(pids, center, n, failed, tender):
    """Collect forked workers that died on their own, so that none lingers as a zombie,
    and have ``tender`` (a :class:`~.nanny.Tender`) start new ones in their place.

    One that fails before all ``n`` have registered means the cluster cannot come up:
    the center stops too (exit status 1), so whoever started it hears at once, not
    after a time-out.
    """
    up = False
    while True:
        await asyncio.sleep(TEND_EVERY if up else 0.05)
        up = up or center.counters["register"] >= n  # counted, so a later death can't undo it
        tender.watch_memory(pids)
        for pid, code in reap(pids).items():
            if up:
                new = tender.died(pid, code)
                if new is not None:
                    pids.append(new)
            else:
                logger.error("Worker process %d exited with code %s before the cluster was "
                             "up; stopping", pid, code)  # fmt: skip
                failed.append(pid)
                os.kill(os.getpid(), signal.SIGTERM)


def main(argv=None):
    """``python -m distributed3.deploy.cli center|worker ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("center", "worker"):
        sys.exit("usage: python -m distributed3.deploy.cli {center,worker} [options]")
    (dcenter if argv[0] == "center" else dworker)(argv[1:])


if __name__ == "__main__":
    main()
