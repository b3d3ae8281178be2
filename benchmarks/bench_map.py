"""No-op map throughput: distributed3 against multiprocessing, in one run.

Times ``pool.gather(pool.map(f, range(N)))`` for a function that does nothing,
on an embedded distributed3 cluster of 2 workers x 1 core, and the same map
through ``multiprocessing.Pool(2).map`` with ``chunksize=1`` (one message per
task, like ours) and with its default chunking.  Prints medians and ratios;
absolute times drift on shared machines, the ratios are what to compare.

Run:  python benchmarks/bench_map.py [--n 10000] [--repeat 5]
"""
import argparse
import multiprocessing
import statistics
import sys
import time

from distributed3 import Pool


def noop(x):
    return x


def median_time(func, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(n=10_000, repeat=5, workers=2):
    """Return ``[(name, seconds, tasks per second)]`` for each contender."""
    rows = []
    with Pool(n_workers=workers) as pool:
        pool.gather(pool.map(noop, range(100)))  # warm up connections and caches

        def d3():
            out = pool.gather(pool.map(noop, range(n)))
            assert len(out) == n

        t = median_time(d3, repeat)
        rows.append(("distributed3 map+gather", t, n / t))
    with multiprocessing.get_context("fork").Pool(workers) as mp:
        mp.map(noop, range(100))
        t = median_time(lambda: mp.map(noop, range(n), chunksize=1), repeat)
        rows.append(("multiprocessing chunksize=1", t, n / t))
        t = median_time(lambda: mp.map(noop, range(n)), repeat)
        rows.append(("multiprocessing default chunks", t, n / t))
    return rows


def print_table(rows, file=sys.stdout):
    base = rows[0][2]
    print(f"{'contender':32} {'median s':>10} {'tasks/s':>12} {'d3 / this':>10}", file=file)
    for name, t, rate in rows:
        print(f"{name:32} {t:10.4f} {rate:12,.0f} {base / rate:10.3f}", file=file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per map")
    parser.add_argument("--repeat", type=int, default=5, help="runs per contender")
    args = parser.parse_args()
    print(f"no-op map of {args.n} tasks, 2 workers x 1 core, median of {args.repeat}")
    print_table(run(args.n, args.repeat))
