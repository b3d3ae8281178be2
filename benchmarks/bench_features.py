"""What chunksize and constants-sent-once save, each against its absence, in one run.

1. Fine-grained map: 10,000 no-op tasks with ``chunksize=1`` and ``chunksize=100``
   (``multiprocessing.Pool(2).map(chunksize=1)`` shown for reference).
2. Big-argument map: 100 tasks that each read one element of an 8 MB array passed
   as a keyword argument, sent once per worker (the default) and, for comparison,
   inside every task message.

Prints medians, ratios and the bytes the workers received.

Run:  python benchmarks/bench_features.py [--n 10000] [--repeat 3]
"""
import argparse
import multiprocessing
import statistics
import time

import numpy as np

from distributed3 import Pool
from distributed3.client import tasks


def noop(x):
    return x


def timed(func, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bytes_in(pool):
    return sum(i["bytes_in"] for i in pool.worker_info().values())


def main(n=10_000, repeat=3):
    with Pool(n_workers=2) as pool:
        pool.gather(pool.map(noop, range(100)))
        t1 = timed(lambda: pool.gather(pool.map(noop, range(n))), repeat)
        t100 = timed(lambda: pool.gather(pool.map(noop, range(n), chunksize=100)), repeat)

        big = np.random.default_rng(0).random(1_000_000)  # 8 MB

        def big_map():
            out = pool.map(lambda i, table: float(table[i]), range(100), table=big)
            assert pool.gather(out)[5] == float(big[5])

        before = bytes_in(pool)
        t_once = timed(big_map, repeat)
        b_once = (bytes_in(pool) - before) / repeat
        limit, tasks.BIG_CONSTANT = tasks.BIG_CONSTANT, float("inf")
        try:
            before = bytes_in(pool)
            t_each = timed(big_map, repeat)
            b_each = (bytes_in(pool) - before) / repeat
        finally:
            tasks.BIG_CONSTANT = limit
    with multiprocessing.get_context("fork").Pool(2) as mp:
        t_mp = timed(lambda: mp.map(noop, range(n), chunksize=1), repeat)

    print(f"1. no-op map of {n} tasks, 2 workers x 1 core, median of {repeat}")
    print(f"   {'contender':34} {'seconds':>8} {'tasks/s':>10}")
    for name, t in [("distributed3 chunksize=1", t1), ("distributed3 chunksize=100", t100),
                    ("multiprocessing chunksize=1", t_mp)]:  # fmt: skip
        print(f"   {name:34} {t:8.3f} {n / t:10,.0f}")
    print(f"   chunksize=100 is {t1 / t100:.1f}x faster than chunksize=1")
    print("2. 100 tasks sharing an 8 MB keyword argument")
    print(f"   {'contender':34} {'seconds':>8} {'MB to workers':>14}")
    print(f"   {'sent once per worker':34} {t_once:8.3f} {b_once / 1e6:14.1f}")
    print(f"   {'sent with every task':34} {t_each:8.3f} {b_each / 1e6:14.1f}")
    print(f"   sending it once is {t_each / t_once:.1f}x faster and moves "
          f"{b_each / b_once:.0f}x fewer bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    main(args.n, args.repeat)
