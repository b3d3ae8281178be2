"""The ``dcenter`` and ``dworker`` executables: parse arguments, set up logging, run.

::

    $ dcenter                         # Started center at 127.0.0.1:8787
    $ dworker 127.0.0.1:8787          # Start worker at 127.0.0.1:<port>
                                      # Register with center at 127.0.0.1:8787

Both read the cluster's secret from ``--secret-file PATH`` or the
``DISTRIBUTED3_SECRET`` environment variable, and refuse to listen on a
non-loopback address without one unless given ``--insecure``.
``python -m distributed3.deploy.cli center|worker ...`` runs the same code.
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
from ..core.admission import raise_open_files_limit
from ..core.server import rpc
from ..core.security import TLS, new_secret_file, read_secret_file
from ..exceptions import DistributedError
from ..utils import is_loopback, local_ip_for, parse_address
from ..worker.store import parse_memory_limit
from ..worker.worker import Worker
from .nanny import Nanny, rss_of
from .procs import (
    fork_workers,
    format_resources,
    parse_resources,
    reap,
    spawn,
    stop_pids,
    supervise,
    visible_gpus,
)

logger = logging.getLogger(__name__)

DEFAULT_CENTER_PORT = 8787


def _common(parser):
    parser.add_argument("--host", default=None, help="address to listen on (default: loopback)")
    parser.add_argument("--secret-file", metavar="PATH",
                        help="file holding the cluster's shared secret "
                             "(default: $DISTRIBUTED3_SECRET)")  # fmt: skip
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback without a secret (dangerous)")  # fmt: skip
    parser.add_argument("--tls-cert", metavar="PATH", help="this process's TLS certificate (PEM)")
    parser.add_argument("--tls-key", metavar="PATH", help="its private key (PEM)")
    parser.add_argument("--tls-ca", metavar="PATH",
                        help="CA that peers' certificates must be signed by (mutual TLS)")  # fmt: skip
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])  # fmt: skip


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
    """The secret from ``--secret-file`` or ``$DISTRIBUTED3_SECRET``, as bytes, or None."""
    if args.secret_file:
        try:
            return read_secret_file(args.secret_file)
        except OSError as e:
            sys.exit(f"error: cannot read secret file {args.secret_file}: {e.strerror}")
        except ValueError as e:
            sys.exit(f"error: {e}")
    env = os.environ.get("DISTRIBUTED3_SECRET")
    return env.encode() if env else None


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


def _setup_logging(level):
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


async def _serve(server, host, port, fallback_port, parent_pid=None, before_close=None,
                 sockets=None):  # fmt: skip
    """Start ``server``, then wait for SIGINT / SIGTERM (or the parent dying) and close it
    (after awaiting ``before_close()``, if given)."""
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
    stopped = asyncio.ensure_future(stop.wait())
    starting = asyncio.ensure_future(server.start(host, sockets=sockets))
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done() or starting.exception() is not None:
        starting.cancel()
        stopped.cancel()
        await asyncio.gather(starting, stopped, return_exceptions=True)
        await server.close()
        if not starting.cancelled():
            starting.result()  # a failed start says why
        return
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
        await server.close()


async def _watch_parent(pid):
    while os.getppid() == pid:
        await asyncio.sleep(0.5)
    logger.warning("Parent process %d is gone; shutting down", pid)


def _center_parser():
    """The command line of ``dcenter``."""
    parser = argparse.ArgumentParser(prog="dcenter", description="Run a distributed3 center.")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port to listen on (default {DEFAULT_CENTER_PORT}, "
                             "or a free one if that is taken; 0 for any free port)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="also start N local worker processes, stopped with the center")  # fmt: skip
    parser.add_argument("--heartbeat-timeout", type=float, default=15.0, metavar="SECONDS",
                        help="remove a worker not heard from for this long (default 15)")  # fmt: skip
    parser.add_argument("--new-secret", metavar="PATH",
                        help="write a fresh random secret to PATH (mode 0600), "
                             "print how to start workers with it, and use it")  # fmt: skip
    # Pool()'s local cluster: serve on a socket it already listens on, and end with it
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ncores", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker-memory-limit", default=None, help=argparse.SUPPRESS)
    _common(parser)
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
    logger.info("Wrote a new secret to %s (readable by you only). Start workers with:\n"
                "    dworker HOST:PORT --secret-file %s\n"
                "and connect with Pool('HOST:PORT', secret=open(%r).read().strip())",
                args.secret_file, args.secret_file, args.secret_file)  # fmt: skip


def dcenter(argv=None):
    """Entry point of ``dcenter``: run a center until interrupted."""
    parser = _center_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    host = args.host or "127.0.0.1"
    if args.new_secret:
        _write_new_secret(args, parser)
    secret = read_secret(args)
    tls = read_tls(args)
    check_exposure(host, secret, args.insecure)
    port = DEFAULT_CENTER_PORT if args.port is None else args.port

    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
    else:
        try:
            listener = listen(host, port, fallback_port=args.port is None)
        except OSError as e:
            sys.exit(f"error: cannot listen on {host}:{port}: {e.strerror}")
    address = (host, listener.getsockname()[1])
    # workers are forked now, before any loop or thread exists: they start without
    # importing anything, and connect to the socket the center is about to serve
    worker_host = local_ip_for(host)  # never a wildcard: workers listen where they route
    workers = fork_workers(args.workers, lambda: _forked_worker(address, worker_host, args,
                                                                secret, tls, listener))  # fmt: skip
    failed = []

    async def main():
        center = Center(secret=secret, tls=tls, heartbeat_timeout=args.heartbeat_timeout)
        reaper = asyncio.ensure_future(_reap(workers, center, args.workers, failed))

        async def stop_workers():  # while the center still serves: they leave cleanly
            reaper.cancel()
            await asyncio.get_running_loop().run_in_executor(None, stop_pids, workers)

        try:
            await _serve(center, host, port, fallback_port=False, parent_pid=args.parent_pid,
                         before_close=stop_workers, sockets=[listener])  # fmt: skip
        finally:
            await stop_workers()  # no-op when they are stopped already

    _run(main)
    if failed:
        sys.exit(1)


def _worker_parser():
    """The command line of ``dworker``."""
    parser = argparse.ArgumentParser(prog="dworker", description="Run a distributed3 worker.")
    parser.add_argument("center", help="address of the center, host:port")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any)")
    parser.add_argument("--ncores", type=int, default=None,
                        help="tasks run at once (default: cores on this machine)")  # fmt: skip
    parser.add_argument("--name", default=None, help="a name for this worker")
    parser.add_argument("--resources", default="", metavar="NAME=N,...",
                        help="what tasks may ask for, e.g. GPU=2,MEM=64e9")  # fmt: skip
    parser.add_argument("--nprocs", default="1", metavar="N|gpu",
                        help="start N worker processes, or one per visible GPU")  # fmt: skip
    parser.add_argument("--min-gpu-memory", type=float, default=0, metavar="BYTES",
                        help="with --nprocs gpu: skip GPUs with less free memory")  # fmt: skip
    parser.add_argument("--lifetime", type=float, default=None, metavar="SECONDS",
                        help="retire gracefully after this long (keys handed to peers)")  # fmt: skip
    parser.add_argument("--max-tasks", type=int, default=None, metavar="N",
                        help="retire gracefully after running N tasks")  # fmt: skip
    parser.add_argument("--memory-limit", default=None, metavar="BYTES|FRACTION|auto",
                        help="keep results under this much memory: '4GB', '0.25' of the "
                             "machine, or 'auto' (the machine's shared by the workers)")
    parser.add_argument("--memory-target", type=float, default=0.6, metavar="FRACTION",
                        help="above this fraction of the limit, the least recently used "
                             "results spill to disk (default 0.6)")
    parser.add_argument("--spill-dir", default=None, metavar="PATH",
                        help="where spilled results go (default: the temporary directory)")
    parser.add_argument("--memory-terminate", type=float, default=0.95, metavar="FRACTION",
                        help="with a limit: restart the worker when its memory beyond an idle "
                             "interpreter's passes this fraction of the limit (default 0.95)")
    parser.add_argument("--no-nanny", action="store_true",
                        help="run the worker in this process, with no supervisor to restart "
                             "it when it dies")
    parser.add_argument("--max-restarts", type=int, default=5, metavar="N",
                        help="the supervisor gives up after N deaths in a minute (default 5)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-handoff", action="store_true", help=argparse.SUPPRESS)
    _common(parser)
    return parser


def dworker(argv=None):
    """Entry point of ``dworker CENTER``: run a worker until interrupted (under a nanny
    that restarts it, unless ``--no-nanny``)."""
    parser = _worker_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        center = parse_address(args.center)
    except ValueError as e:
        parser.error(str(e))
    host = args.host or local_ip_for(center[0])
    secret = read_secret(args)
    tls = read_tls(args)
    check_exposure(host, secret, args.insecure)
    try:
        resources = parse_resources(args.resources)
    except ValueError as e:
        parser.error(str(e))
    if args.nprocs != "1":
        sys.exit(_run_many(args, argv if argv is not None else sys.argv[1:], resources))
    memory = _memory_options(parser, args, processes=1)
    if not args.no_nanny:
        report = _death_reporter(center, host, secret, tls)
        sys.exit(_nannied(argv if argv is not None else sys.argv[1:], memory["memory_limit"],
                          args, report))  # fmt: skip

    async def main():
        worker = Worker(center, ncores=args.ncores, name=args.name, secret=secret, tls=tls,
                        lifetime=args.lifetime, max_tasks=args.max_tasks,
                        resources=resources, **memory)  # fmt: skip
        if args.no_handoff:  # a local cluster stops as a whole: nobody to hand keys to
            worker.handoff_timeout = 0
        await _serve(worker, host, args.port, fallback_port=True, parent_pid=args.parent_pid)

    _run(main)


def _memory_options(parser, args, processes):
    """The Worker's memory keywords from ``--memory-limit`` and kin (an error names a bad
    limit); ``auto`` shares the machine among ``processes`` workers."""
    try:
        limit = parse_memory_limit(args.memory_limit, processes)
    except ValueError as e:
        parser.error(str(e))
    return {"memory_limit": limit, "memory_target": args.memory_target,
            "spill_directory": args.spill_dir}


def _death_reporter(center, host, secret, tls):
    """``report(pid, cause)`` for a nanny: tells the center that the worker process
    ``pid`` on ``host`` died, and why (within 5 s, or raises)."""

    def report(pid, cause):
        async def tell():
            async with rpc(center, secret=secret, tls=tls, timeout=5) as c:
                await c.worker_died(host=host, pid=pid, cause=cause)

        asyncio.run(asyncio.wait_for(tell(), 5))

    return report


def _nannied(argv, limit, args, report=None):
    """Run this worker as a child of a :class:`~distributed3.deploy.nanny.Nanny`, which
    starts it again when it dies (and reports why); returns the exit status."""
    command = [sys.executable, "-m", "distributed3.deploy.cli", "worker", *argv,
               "--no-nanny", "--parent-pid", str(os.getpid())]  # fmt: skip
    # what the child holds beyond an interpreter like this one, idle, counts
    terminate = None if limit is None else rss_of(os.getpid()) + args.memory_terminate * limit
    return Nanny(command, max_restarts=args.max_restarts, terminate=terminate,
                 parent_pid=args.parent_pid, report=report).run()


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
        await _serve(worker, host, 0, fallback_port=True, parent_pid=parent)

    _run(main)


async def _reap(pids, center, n, failed):
    """Collect forked workers that died on their own, so that none lingers as a zombie.

    One that fails before all ``n`` have registered means the cluster cannot come up:
    the center stops too (exit status 1), so whoever started it hears at once, not
    after a time-out.
    """
    up = False
    while True:
        await asyncio.sleep(1 if up else 0.05)
        up = up or center.counters["register"] >= n  # counted, so a later death can't undo it
        for pid, code in reap(pids).items():
            if up:
                logger.warning("Worker process %d exited with code %s", pid, code)
            else:
                logger.error("Worker process %d exited with code %s before the cluster was "
                             "up; stopping", pid, code)  # fmt: skip
                failed.append(pid)
                os.kill(os.getpid(), signal.SIGTERM)


def _run_many(args, argv, resources):
    """``--nprocs N|gpu``: this process only starts and supervises the workers."""
    base = _without(argv, {"--nprocs": 1, "--min-gpu-memory": 1, "--name": 1, "--resources": 1,
                           "--memory-limit": 1})  # fmt: skip
    children = []
    gpus = visible_gpus(min_free_bytes=args.min_gpu_memory) if args.nprocs == "gpu" else None
    if args.nprocs == "gpu" and not gpus:
        sys.exit(f"error: no visible GPU has {args.min_gpu_memory:.0f} bytes free")
    try:
        n = len(gpus) if gpus else int(args.nprocs)
    except ValueError:
        sys.exit(f"error: --nprocs takes a number or 'gpu', not {args.nprocs!r}")
    try:  # 'auto' or a fraction: the machine's memory shared among the n workers
        limit = parse_memory_limit(args.memory_limit, n)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if limit is not None:
        base += ["--memory-limit", str(limit)]
    if gpus:
        for gpu in gpus:
            res = dict(resources, GPU=1)
            name = f"{args.name or 'gpu'}-{gpu.index}"
            logger.info("Starting a worker for GPU %s (%.1f GB free)", gpu.index,
                        gpu.free_bytes / 1e9)  # fmt: skip
            children.append(_child(base, name, res, {"CUDA_VISIBLE_DEVICES": gpu.index}))
    else:
        for i in range(n):
            name = f"{args.name}-{i}" if args.name else None
            children.append(_child(base, name, resources, {}))
    return supervise(children)


def _child(base, name, resources, env):
    cmd = [sys.executable, "-m", "distributed3.deploy.cli", "worker", *base]
    if name:
        cmd += ["--name", name]
    if resources:
        cmd += ["--resources", format_resources(resources)]
    return spawn(cmd, env=env)


def _without(argv, options):
    """``argv`` without the given options and their values (``--opt v`` or ``--opt=v``)."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg.split("=")[0] in options:
            skip = 0 if "=" in arg else options[arg.split("=")[0]]
        else:
            out.append(arg)
    return out


def _run(main):
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except (OSError, TimeoutError, DistributedError) as e:
        logger.error("%s", e)
        sys.exit(1)


def main(argv=None):
    """``python -m distributed3.deploy.cli center|worker ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("center", "worker"):
        sys.exit("usage: python -m distributed3.deploy.cli {center,worker} [options]")
    (dcenter if argv[0] == "center" else dworker)(argv[1:])


if __name__ == "__main__":
    main()
