"""How far one center goes: a real center, real pools, up to thousands of simulated workers.

The workers are :mod:`distributed3.simulation`'s: real workers on the real protocol,
many to a process, whose tasks run on their event loop.  For each number of workers
it reports

* how long they took to register, and the center's CPU (per cent of one core) and
  memory per worker while idle: heartbeats, with ``--pools`` pools subscribed;
* how soon every pool learns of a worker that joins, and of one whose connection
  breaks (its process died);
* no-op tasks per second through one pool: a map in its own chunks, a map of one task
  per message, a dask tree reduction through ``pool.get``, and the center's messages
  per task.

The workers and the center share this machine's cores with the pool, so the rates
are a lower bound for a cluster; their trend with the number of workers is the
finding.  Run::

    python -m distributed3.bench.scale [--workers 10,100,1000] [--pools 4] [--quick]
"""
import argparse
import os
import statistics
import sys
import time

import psutil

from ..client.pool import Pool
from ..simulation import start_workers, stop_workers
from ..testing import Proc
from .report import table

SECRET = "scale-benchmark"
FULL = {"map": 100_000, "map1": 5_000, "tree": 2_000, "repeat": 3, "idle": 3.0, "joins": 5}
QUICK = {"map": 10_000, "map1": 1_000, "tree": 500, "repeat": 1, "idle": 1.0, "joins": 2}


def _cpu_seconds(proc):
    times = proc.cpu_times()
    return times.user + times.system


def _median_rate(n, run, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def _messages(pool):
    counters = pool.session.sync(pool.session.center("counters"))
    return sum(v for k, v in counters.items() if k not in ("bytes_in", "frames_in"))


def _seconds_until(predicate, timeout, what):
    """Seconds until ``predicate()`` holds, looked at every half millisecond."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{what} (waited {timeout} s)")
        time.sleep(0.0005)
    return time.perf_counter() - start


def membership_latency(pools, address, joins):
    """Median seconds from a worker's start until every pool lists it, and from its
    connections breaking until every pool has dropped it."""
    session = pools[0].session
    joined, lost = [], []
    for _ in range(joins):
        start = time.perf_counter()  # a new worker: connect, register, pushed to the pools
        [worker] = session.sync(start_workers(address, 1, secret=SECRET))
        joined.append(time.perf_counter() - start + _seconds_until(
            lambda: all(worker.address in p.available_cores for p in pools), 10,
            "the pools to see a worker join"))  # fmt: skip
        start = time.perf_counter()
        session.sync(stop_workers([worker], report=False))  # as if its process died
        lost.append(time.perf_counter() - start + _seconds_until(
            lambda: not any(worker.address in p.available_cores for p in pools), 10,
            "the pools to see a worker go"))  # fmt: skip
    return statistics.median(joined), statistics.median(lost)


def throughput(pool, config):
    """Tasks per second through ``pool``, and the center's messages per task."""
    n, n1, repeat = config["map"], config["map1"], config["repeat"]
    out = {}
    pool.gather(pool.map(abs, range(n)))  # the pool learns the task time: chunks of >= 2 ms
    before = _messages(pool)
    out["map"] = _median_rate(n, lambda: pool.gather(pool.map(abs, range(n))), repeat)
    out["map msgs/task"] = (_messages(pool) - before) / (n * repeat)
    pool.gather(pool.map(abs, range(n1), chunksize=1))
    before = _messages(pool)
    out["map1"] = _median_rate(n1, lambda: pool.gather(pool.map(abs, range(n1), chunksize=1)),
                               repeat)  # fmt: skip
    out["map1 msgs/task"] = (_messages(pool) - before) / (n1 * repeat)
    try:
        from .graphs import tree
    except ImportError:  # no dask: no graph
        return out
    x, answer = tree(config["tree"])
    ntasks = len(x.__dask_graph__())

    def reduce():
        assert x.compute(scheduler=pool.get) == answer

    reduce()  # the workers import what the graph's functions need
    out["tree"] = _median_rate(ntasks, reduce, repeat)
    return out


def measure(nworkers, npools, config, log=print):
    """The figures of one cluster of ``nworkers`` simulated workers."""
    env = {"DISTRIBUTED3_SECRET": SECRET}
    center_cmd = [sys.executable, "-m", "distributed3", "center", "--port", "0"]
    with Proc(center_cmd, env) as center:
        address = center.wait_for_line(r"Started center at (\S+)", 30).group(1)
        center_proc = psutil.Process(center.proc.pid)
        rss_before = center_proc.memory_info().rss
        start = time.perf_counter()
        sim_cmd = [sys.executable, "-m", "distributed3.simulation", address,
                   "--workers", str(nworkers)]  # fmt: skip
        with Proc(sim_cmd, env) as sim:
            sim.wait_for_line(r"ready", 60 + nworkers / 10)
            figures = {"register s": time.perf_counter() - start}
            pools = [Pool(address, secret=SECRET) for _ in range(npools)]
            try:
                time.sleep(0.5)  # past the joins' bursts: the idle state from here
                cpu = _cpu_seconds(center_proc)
                time.sleep(config["idle"])
                figures["center idle CPU %"] = (100 * (_cpu_seconds(center_proc) - cpu)
                                                / config["idle"])  # fmt: skip
                figures["center KB/worker"] = (center_proc.memory_info().rss
                                               - rss_before) / nworkers / 1e3  # fmt: skip
                log(f"  {nworkers} workers: membership ...")
                joined, lost = membership_latency(pools, address, config["joins"])
                figures["join ms"], figures["loss ms"] = 1e3 * joined, 1e3 * lost
                log(f"  {nworkers} workers: throughput ...")
                figures.update(throughput(pools[0], config))
            finally:
                for pool in pools:
                    pool.close()
    return figures


def run(workers=(10, 100, 1000), npools=4, quick=False, log=print):
    """``{nworkers: figures}`` for each cluster size."""
    from ..simulation import raise_open_files_limit

    raise_open_files_limit()
    config = QUICK if quick else FULL
    results = {}
    for n in workers:
        log(f"{n} simulated workers ...")
        results[n] = measure(n, npools, config, log)
    return results


COLUMNS = ["register s", "center idle CPU %", "center KB/worker", "join ms", "loss ms",
           "map", "map msgs/task", "map1", "map1 msgs/task", "tree"]  # fmt: skip


def print_report(results, npools, file=sys.stdout):
    print(f"\nOne center, N simulated workers ({npools} pools subscribed), this machine's "
          f"{os.cpu_count()} cores; map / map1 / tree in tasks/s (map: own chunks; map1: one "
          "task per message; tree: a dask tree reduction through pool.get)", file=file)
    rows = [(f"{n} workers", figures) for n, figures in results.items()]
    print(table(rows, COLUMNS), file=file)
    smallest, largest = min(results), max(results)
    for field in ("map", "map1", "tree"):
        if results[smallest].get(field) and results[largest].get(field):
            ratio = results[largest][field] / results[smallest][field]
            print(f"{field}: {largest} workers / {smallest} workers = {ratio:.2f}", file=file)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distributed3.bench.scale",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--workers", default="10,100,1000",
                        help="comma-separated numbers of simulated workers")  # fmt: skip
    parser.add_argument("--pools", type=int, default=4, help="pools subscribed at idle")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args(argv)
    workers = [int(n) for n in args.workers.split(",") if n]
    results = run(workers, args.pools, args.quick, log=lambda s: print(s, file=sys.stderr))
    print_report(results, args.pools)
    return results


if __name__ == "__main__":
    main()
