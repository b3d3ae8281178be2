"""Chaos: a long map while workers are killed (SIGKILL), frozen (SIGSTOP) and added.

Runs the same workload twice on real ``bin/dcenter`` / ``bin/dworker`` processes:
once undisturbed, once while a chaos thread, at once and then every few hundred
milliseconds, in turn freezes a random worker or kills one (it wakes 1 to 4 s later, long after the center,
run with ``--heartbeat-timeout 1``, has dropped it), and starts a new one.  Every
result is checked; the report gives results lost and wrong, results delivered twice
by a stream (``imap_unordered``), workers killed and frozen, and the slowdown
against the undisturbed run.  Lost, wrong and duplicate must all be 0.

With ``--memory-limit 100MB`` the workers also run under memory pressure: each result
carries ``--payload`` bytes (1 MB by default then), so that a round's results outgrow
the workers' limits; they spill to disk, pause and turn tasks away while being killed
and frozen, and the report adds the bytes spilled and the pauses of the undisturbed run.

Run:  python benchmarks/chaos.py [--rounds 10] [--tasks 300] [--workers 4] [--seed 0]
                                 [--memory-limit 100MB [--payload 1000000]]
"""
import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter

import numpy as np

from distributed3 import Pool
from distributed3.testing import BIN, Proc, process_cluster


def workload(pool, rounds, ntasks, payload=0):
    """Maps chained over the previous round, and a stream; ``Counter`` of results
    ``lost``, ``wrong`` and ``duplicate``.  With a ``payload``, each map result is an
    array of that many bytes whose elements all hold the value."""

    def work(x):  # local, so it travels by value even when this file is imported
        time.sleep(0.001)
        return np.full(payload // 8, x * x) if payload else x * x

    def value(v):
        return int(v[0]) if payload else v

    counts = Counter(lost=0, wrong=0, duplicate=0)
    for r in range(rounds):
        A = pool.map(work, range(ntasks))
        B = pool.map(lambda a, r=r: a + r, A)
        try:
            values = pool.gather(B)
        except Exception as e:  # counted, not hidden
            print(f"round {r}: gather failed: {e!r}", file=sys.stderr)
            counts["lost"] += ntasks
            continue
        counts["wrong"] += sum(value(v) != x * x + r for x, v in enumerate(values))
        try:
            seen = Counter(pool.imap_unordered(lambda x: value(work(x)), range(ntasks)))
        except Exception as e:
            print(f"round {r}: stream failed: {e!r}", file=sys.stderr)
            counts["lost"] += ntasks
            continue
        want = Counter(x * x for x in range(ntasks))
        counts["duplicate"] += sum((seen - want).values())
        counts["lost"] += sum((want - seen).values())
    return counts


class Chaos(threading.Thread):
    """Kill or freeze a random worker and start a fresh one, over and over, until stopped."""

    def __init__(self, address, workers, rng, low=0.2, high=0.6, worker_args=()):
        super().__init__(daemon=True)
        self.address, self.workers, self.rng = address, workers, rng
        self.worker_args = list(worker_args)
        self.low, self.high = low, high
        self.stop = threading.Event()
        self.killed = self.frozen = 0
        self.started = []
        self.thaw_at = {}  # proc -> when it wakes

    def run(self):
        wait = 0.0  # the first blow at once, then every low to high seconds
        while not self.stop.wait(wait):
            wait = self.rng.uniform(self.low, self.high)
            self._thaw(time.monotonic())
            alive = [w for w in self.workers if w.proc.poll() is None and w not in self.thaw_at]
            if len(alive) > 1:
                victim = self.rng.choice(alive)
                if self.frozen > self.killed:  # in turn: a freeze first, then a kill...
                    victim.kill()
                    self.killed += 1
                else:
                    victim.signal(signal.SIGSTOP)
                    self.thaw_at[victim] = time.monotonic() + self.rng.uniform(1, 4)
                    self.frozen += 1
            fresh = Proc([os.path.join(BIN, "dworker"), self.address, "--ncores", "1",
                          "--no-nanny", *self.worker_args])  # signals reach the worker itself
            self.started.append(fresh)
            self.workers.append(fresh)
        self._thaw(float("inf"))

    def _thaw(self, now):
        for proc, when in list(self.thaw_at.items()):
            if when <= now:
                proc.signal(signal.SIGCONT)
                del self.thaw_at[proc]


def main(rounds=10, ntasks=300, nworkers=4, seed=0, memory_limit=None, payload=None):
    rng = random.Random(seed)
    center_args = ["--heartbeat-timeout", "1"]
    worker_args = ["--memory-limit", str(memory_limit)] if memory_limit else []
    if payload is None:
        payload = 1_000_000 if memory_limit else 0
    with process_cluster(nworkers=nworkers, center_args=center_args,
                         worker_args=worker_args) as (address, _, workers):  # fmt: skip
        with Pool(address, timeout=30) as pool:
            workload(pool, 1, 50, payload)  # warm up
            start = time.perf_counter()
            calm_counts = workload(pool, rounds, ntasks, payload)
            calm = time.perf_counter() - start
            info = pool.worker_info().values()
            spilled = sum(i["spilled_bytes"] for i in info)
            pauses = sum(i["pauses"] for i in info)

            chaos = Chaos(address, list(workers), rng, worker_args=worker_args)
            chaos.start()
            start = time.perf_counter()
            try:
                chaos_counts = workload(pool, rounds, ntasks, payload)
            finally:
                chaos.stop.set()
                chaos.join()
            stormy = time.perf_counter() - start
            for proc in chaos.started:
                proc.__exit__(None, None, None)
    total = rounds * ntasks * 3
    print(f"{rounds} rounds x {ntasks} tasks x (2 chained maps + a stream) on {nworkers} "
          f"workers, seed {seed}")
    if memory_limit:
        print(f"memory pressure: {memory_limit} per worker, {payload:,} bytes per result; "
              f"undisturbed run: {spilled / 1e6:.0f} MB spilled, {pauses} pauses")
    print(f"{'run':12} {'seconds':>8} {'tasks':>7} {'lost':>5} {'wrong':>6} {'twice':>6} "
          f"{'killed':>7} {'frozen':>7}")
    for name, seconds, counts, killed, frozen in (
            ("undisturbed", calm, calm_counts, 0, 0),
            ("chaos", stormy, chaos_counts, chaos.killed, chaos.frozen)):  # fmt: skip
        print(f"{name:12} {seconds:8.2f} {total:7d} {counts['lost']:5d} {counts['wrong']:6d} "
              f"{counts['duplicate']:6d} {killed:7d} {frozen:7d}")
    bad = sum((calm_counts + chaos_counts).values())
    print(f"slowdown under chaos: {stormy / calm:.2f}x; results lost, wrong or twice: {bad}")
    return {"bad": bad, "killed": chaos.killed, "frozen": chaos.frozen, "spilled": spilled,
            "pauses": pauses}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", help="each worker's, e.g. 100MB: memory pressure")
    parser.add_argument("--payload", type=int, help="bytes per result (default: 1 MB with "
                                                    "--memory-limit, else none)")
    args = parser.parse_args()
    result = main(args.rounds, args.tasks, args.workers, args.seed, args.memory_limit,
                  args.payload)  # fmt: skip
    sys.exit(1 if result["bad"] else 0)
