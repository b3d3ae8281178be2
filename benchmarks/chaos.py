"""Chaos: a long map while workers are killed (SIGKILL) and added at random.

Runs the same workload twice on real ``bin/dcenter`` / ``bin/dworker`` processes:
once undisturbed, once while a chaos thread kills a random worker and starts a
new one every few hundred milliseconds.  Every result is checked; the report
gives tasks lost (must be 0), workers killed and the slowdown against the
undisturbed run.

Run:  python benchmarks/chaos.py [--rounds 10] [--tasks 300] [--workers 4] [--seed 0]
"""
import argparse
import os
import random
import sys
import threading
import time

from distributed3 import Pool
from distributed3.testing import BIN, Proc, process_cluster


def workload(pool, rounds, ntasks):
    """Maps chained over the previous round; returns how many results were wrong or lost."""

    def work(x):  # local, so it travels by value even when this file is imported
        time.sleep(0.001)
        return x * x

    lost = 0
    for r in range(rounds):
        A = pool.map(work, range(ntasks))
        B = pool.map(lambda a, r=r: a + r, A)
        try:
            values = pool.gather(B)
        except Exception as e:  # counted, not hidden
            print(f"round {r}: gather failed: {e!r}", file=sys.stderr)
            lost += ntasks
            continue
        lost += sum(v != x * x + r for x, v in enumerate(values))
    return lost


class Chaos(threading.Thread):
    """Kill a random worker and start a fresh one, over and over, until stopped."""

    def __init__(self, address, workers, rng, low=0.2, high=0.6):
        super().__init__(daemon=True)
        self.address, self.workers, self.rng = address, workers, rng
        self.low, self.high = low, high
        self.stop = threading.Event()
        self.killed = 0
        self.started = []

    def run(self):
        while not self.stop.wait(self.rng.uniform(self.low, self.high)):
            alive = [w for w in self.workers if w.proc.poll() is None]
            if len(alive) > 1:
                self.rng.choice(alive).kill()
                self.killed += 1
            fresh = Proc([os.path.join(BIN, "dworker"), self.address, "--ncores", "1"])
            self.started.append(fresh)
            self.workers.append(fresh)


def main(rounds=10, ntasks=300, nworkers=4, seed=0):
    rng = random.Random(seed)
    with process_cluster(nworkers=nworkers) as (address, _, workers):
        with Pool(address, timeout=30) as pool:
            workload(pool, 1, 50)  # warm up
            start = time.perf_counter()
            lost_calm = workload(pool, rounds, ntasks)
            calm = time.perf_counter() - start

            chaos = Chaos(address, list(workers), rng)
            chaos.start()
            start = time.perf_counter()
            try:
                lost_chaos = workload(pool, rounds, ntasks)
            finally:
                chaos.stop.set()
                chaos.join()
            stormy = time.perf_counter() - start
            for proc in chaos.started:
                proc.__exit__(None, None, None)
    total = rounds * ntasks * 2
    print(f"{rounds} rounds x {ntasks} tasks x 2 chained maps on {nworkers} workers, seed {seed}")
    print(f"{'run':12} {'seconds':>8} {'tasks':>7} {'lost':>5} {'killed':>7}")
    print(f"{'undisturbed':12} {calm:8.2f} {total:7d} {lost_calm:5d} {0:7d}")
    print(f"{'chaos':12} {stormy:8.2f} {total:7d} {lost_chaos:5d} {chaos.killed:7d}")
    print(f"slowdown under chaos: {stormy / calm:.2f}x; tasks lost: {lost_calm + lost_chaos}")
    return lost_calm + lost_chaos


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.exit(1 if main(args.rounds, args.tasks, args.workers, args.seed) else 0)
