"""Simulated workers: hundreds of light workers in one process, on one event loop.

Each is a real :class:`~distributed3.worker.Worker` -- it registers, heartbeats,
reports its keys, serves its data and answers tasks over the real protocol -- whose
tasks run on the event loop instead of in threads, after a ``service_time`` that
stands in for real work (one task per core at a time).  So a thousand of them fit on
a laptop's cores, and a center or a pool can be measured against a thousand workers
without a thousand machines::

    python -m distributed3.simulation HOST:PORT --workers 500 [--service-time 0.001]

starts 500 of them against that center (the secret from ``DISTRIBUTED3_SECRET``),
prints ``ready 500`` once all are registered, and stops them on SIGTERM or Ctrl-C.

>>> import asyncio
>>> from distributed3 import Center
>>> async def demo():
...     center = await Center().start(port=0)
...     workers = await start_workers(center.address, 20)
...     n = len(center.ncores)
...     await stop_workers(workers)
...     await center.close()
...     return n
>>> asyncio.run(demo())
20
"""
import argparse
import asyncio
import heapq
import logging
import os
import resource
import signal
import sys

from .core.security import normalize_secret
from .utils import format_address, parse_address
from .worker.runner import TaskRunner
from .worker.worker import Worker

__all__ = ["SimRunner", "SimWorker", "start_workers", "stop_workers"]

START_AT_ONCE = 50  # workers registering at the same time: a burst the center can take


class SimRunner(TaskRunner):
    """Runs a worker's tasks on its event loop: each starts when one of ``ncores``
    simulated cores is free and takes ``service_time`` seconds there, then is really
    computed (so answers are right) and answered as the threads' runner would.  Its chunks
    run whole: a split finds none to share."""

    def __init__(self, ncores, store, memory_limit=None, service_time=0.0):
        super().__init__(ncores, store, memory_limit)
        self.service_time = service_time
        self.cores_free_at = [0.0] * ncores  # a heap: when each simulated core is free

    def launch(self, comm, keys, function, args_list, spread, kwargs, seeds, owner, lone,
               budget=None, values_only=False):  # fmt: skip
        """As a real runner's, on the loop; a ``budget`` stops nothing here: the chunk's
        simulated time is known before it runs."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        if self.paused is not None:
            super().launch(comm, keys, function, args_list, spread, kwargs, seeds, owner, lone)
            return
        self.active += len(args_list)
        now = loop.time()
        start = max(now, heapq.heappop(self.cores_free_at))
        done = start + self.service_time * len(args_list)
        heapq.heappush(self.cores_free_at, done)
        job = (comm, keys, function, args_list, spread, kwargs, seeds, owner, lone, values_only,
               None)  # fmt: skip
        if done <= now:
            self._run(*job)
        else:
            loop.call_at(done, self._run, *job)

    def _took(self, start, n):
        """The tasks' simulated time on their core, as a real worker would report it:
        a pool that heard they were instant would keep them on a few workers."""
        return super()._took(start, n) + self.service_time * n


class SimWorker(Worker):
    """A :class:`~distributed3.worker.Worker` whose tasks run on its loop (see
    :class:`SimRunner`), with no hand-off of keys when it leaves."""

    def __init__(self, center, *, service_time=0.0, **kwargs):
        kwargs.setdefault("ncores", 1)
        kwargs.setdefault("handoff_timeout", 0)
        super().__init__(center, **kwargs)
        self.runner = SimRunner(self.ncores, self._store, self.memory_limit, service_time)


async def start_workers(center, n, *, service_time=0.0, host="127.0.0.1", **kwargs):
    """Start ``n`` :class:`SimWorker` on the running loop, registered with ``center``
    (``START_AT_ONCE`` at a time); the list of them."""
    workers = []
    for first in range(0, n, START_AT_ONCE):
        batch = [SimWorker(center, service_time=service_time, **kwargs)
                 for _ in range(min(START_AT_ONCE, n - first))]  # fmt: skip
        await asyncio.gather(*(w.start(host=host, port=0) for w in batch))
        workers.extend(batch)
    return workers


async def stop_workers(workers, report=True):
    """Stop ``workers``: telling the center (``report``), or as if they died."""
    await asyncio.gather(*(w.close(report=report, handoff=False) for w in workers))


def raise_open_files_limit():
    """Raise this process's limit of open files to the hard one: each worker holds a
    listening socket and its connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distributed3.simulation",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("center", help="the center's host:port")
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--ncores", type=int, default=1, help="simulated cores per worker")
    parser.add_argument("--service-time", type=float, default=0.0,
                        help="seconds each task takes on its core (default 0)")  # fmt: skip
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_open_files_limit()
    secret = normalize_secret(os.environ.get("DISTRIBUTED3_SECRET"))

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        workers = await start_workers(parse_address(args.center), args.workers,
                                      service_time=args.service_time, ncores=args.ncores,
                                      heartbeat_interval=args.heartbeat_interval,
                                      secret=secret)  # fmt: skip
        print(f"ready {len(workers)} at {format_address(workers[0].address)}", flush=True)
        await stop.wait()
        await stop_workers(workers)

    asyncio.run(run())


if __name__ == "__main__":
    main()
