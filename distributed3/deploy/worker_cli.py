"""The ``dworker`` executable: a worker for a center, under a nanny that restarts it
(:mod:`.nanny`), or ``--nprocs N|gpu`` of them.

::

    $ dworker 127.0.0.1:8787 --memory-limit 4GB     # Start worker at 127.0.0.1:<port>
"""
import argparse
import asyncio
import logging
import os
import sys

from ..core.server import rpc
from ..utils import local_ip_for, parse_address
from ..worker.store import parse_memory_limit
from ..worker.worker import Worker
from .config import apply_config
from .nanny import TERMINATE, Nanny, rss_of, worker_environment
from .procs import format_resources, parse_resources, spawn, supervise, visible_gpus
from .serving import (
    add_common_options,
    check_exposure,
    health_endpoint,
    read_secret,
    read_tls,
    run,
    serve,
    setup_logging,
)

logger = logging.getLogger(__name__)


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
    parser.add_argument("--center-wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to this long for a center that is not up yet, as "
                             "dask's --death-timeout does at start (default: fail at once)")
    parser.add_argument("--death-timeout", type=float, default=None, metavar="SECONDS",
                        help="leave when the center has been unreachable this long, so "
                             "that workers a batch system started end with their cluster "
                             "(default: keep trying)")
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
    parser.add_argument("--memory-spill", type=float, default=0.7, metavar="FRACTION",
                        help="above this fraction of the limit in process memory, more "
                             "results spill (default 0.7)")
    parser.add_argument("--memory-pause", type=float, default=0.8, metavar="FRACTION",
                        help="above this fraction, no new task starts until memory falls "
                             "(default 0.8)")
    parser.add_argument("--spill-dir", default=None, metavar="PATH",
                        help="where spilled results go (default: the temporary directory)")
    parser.add_argument("--memory-terminate", type=float, default=TERMINATE, metavar="FRACTION",
                        help="with a limit: restart the worker when its memory beyond an idle "
                             "interpreter's passes this fraction of the limit (default 0.95)")
    parser.add_argument("--no-nanny", action="store_true",
                        help="run the worker in this process, with no supervisor to restart "
                             "it when it dies")
    parser.add_argument("--max-restarts", type=int, default=5, metavar="N",
                        help="the supervisor gives up after N deaths in a minute (default 5)")
    parser.add_argument("--http-port", type=int, default=None, metavar="PORT",
                        help="serve /health and /ready over HTTP on this port, on the same "
                             "host (0: any free port; default: none)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-handoff", action="store_true", help=argparse.SUPPRESS)
    add_common_options(parser, "the address of the interface that routes to the center")
    return parser


def dworker(argv=None):
    """Entry point of ``dworker CENTER``: run a worker until interrupted (under a nanny
    that restarts it, unless ``--no-nanny``)."""
    parser = _worker_parser()
    apply_config(parser, "worker")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
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
        worker.center_wait = args.center_wait
        worker.death_timeout = args.death_timeout
        await serve(worker, host, args.port, fallback_port=True, parent_pid=args.parent_pid,
                    http=health_endpoint(host, args.http_port))  # fmt: skip

    run(main, worker=True)


def _memory_options(parser, args, processes):
    """The Worker's memory keywords from ``--memory-limit`` and kin (an error names a bad
    limit); ``auto`` shares the machine among ``processes`` workers."""
    try:
        limit = parse_memory_limit(args.memory_limit, processes)
    except ValueError as e:
        parser.error(str(e))
    return {"memory_limit": limit, "memory_target": args.memory_target,
            "memory_spill": args.memory_spill, "memory_pause": args.memory_pause,
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
    # the child has the secret in its environment: standard input is the nanny's
    command = [sys.executable, "-m", "distributed3.deploy.cli", "worker",
               *_without(argv, {"--secret-stdin": 0}), "--no-nanny",
               "--parent-pid", str(os.getpid())]  # fmt: skip
    # what the child holds beyond an interpreter like this one, idle, counts
    terminate = None if limit is None else rss_of(os.getpid()) + args.memory_terminate * limit
    ncores = args.ncores or os.cpu_count()  # as the worker will count them
    return Nanny(command, env=worker_environment(ncores), max_restarts=args.max_restarts,
                 terminate=terminate,
                 parent_pid=args.parent_pid, report=report).run()


def _run_many(args, argv, resources):
    """``--nprocs N|gpu``: this process only starts and supervises the workers."""
    base = _without(argv, {"--nprocs": 1, "--min-gpu-memory": 1, "--name": 1, "--resources": 1,
                           "--memory-limit": 1, "--http-port": 1,
                           "--secret-stdin": 0})  # fmt: skip
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
            children.append(_child(base + _http_port(args, len(children)), name, res,
                                   {"CUDA_VISIBLE_DEVICES": gpu.index}))  # fmt: skip
    else:
        for i in range(n):
            name = f"{args.name}-{i}" if args.name else None
            children.append(_child(base + _http_port(args, i), name, resources, {}))
    return supervise(children)


def _http_port(args, i):
    """The ``--http-port`` of the ``i``-th of several workers: the next ports up."""
    if args.http_port is None:
        return []
    return ["--http-port", str(args.http_port + i if args.http_port else 0)]


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
