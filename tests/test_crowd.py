"""Which workers a batch keeps at work, among hundreds of simulated ones: tiny tasks stay
on a few, several to a message; long ones reach every core (client/crowd.py)."""
import contextlib
import sys
import time
from collections import defaultdict
from types import SimpleNamespace

import pytest

from distributed3 import Pool
from distributed3.client.crowd import Crowd, Reach
from distributed3.scheduling import PROBE_CORES
from distributed3.testing import Proc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = "crowd-test"
ENV = {"DISTRIBUTED3_SECRET": SECRET}


@contextlib.contextmanager
def simulated(n, service_time=0.0):
    """A center, and ``n`` simulated workers in one process; the center's address, once
    a pool sees them all."""
    center_cmd = [sys.executable, "-m", "distributed3", "center", "--port", "0"]
    with Proc(center_cmd, ENV) as center:
        address = center.wait_for_line(r"Started center at (\S+)", 30).group(1)
        with Proc([sys.executable, "-m", "distributed3.simulation", address,
                   "--workers", str(n), "--service-time", str(service_time)], ENV) as sim:
            sim.wait_for_line(rf"ready {n}", 60)
            yield address


def ran_on(handles):
    return {w for h in handles for w in h.workers}


def test_tiny_tasks_stay_on_a_few_of_a_thousand_workers():
    with simulated(1000) as address, Pool(address, secret=SECRET) as pool:
        pool.wait_for_workers(1000, timeout=10)
        used = []
        for _ in range(3):  # the first connects to workers; later ones find them open
            values = pool.map(abs, range(-3000, 0), chunksize=1)
            assert pool.gather(values) == list(range(3000, 0, -1))
            used.append(len(ran_on(values)))
            del values
        # the probe's few cores, widened once or twice by a late reply, a time or two
        # more when the loaded machine stalls the one process all 1000 workers run in
        # ([91, 40, 71] beside two busy loops on these 2 cores; before: placing 3000 tasks
        # outlasted the probe, and all 1000 took some)
        assert min(used) <= 8 * PROBE_CORES and max(used) <= 16 * PROBE_CORES, used


class _CountedLoads(defaultdict):
    """A pool's occupancy that counts the workers looked up in it."""

    lookups = 0

    def __getitem__(self, worker):
        self.lookups += 1
        return super().__getitem__(worker)


def test_a_round_of_few_tasks_looks_at_few_of_a_thousand_idle_workers():
    """Which idle workers a round offers its few tasks to (an apply: one) costs a look
    at that many workers, not at each of a thousand; the least loaded still win, in
    turn, when the first ones are busy."""
    workers = [("127.0.0.1", 10_000 + i) for i in range(1000)]
    occupancy = _CountedLoads(int)
    batch = SimpleNamespace(crowd=Crowd(workers), session=SimpleNamespace(occupancy=occupancy),
                            lost=set(), resting=set(), need={}, _eligible=lambda w: True)

    def load(w):
        return occupancy[w]

    assert Reach._least_loaded_idle(batch, workers, 8, load) == workers[:8]
    assert occupancy.lookups == 8
    for w in workers[:995]:
        occupancy[w] = 1  # busy with other calls' tasks: the five others first
    assert Reach._least_loaded_idle(batch, workers, 8, load) == workers[995:] + workers[:3]


def test_a_round_leaves_out_a_worker_at_work_that_just_died():
    """A worker at work on the batch, or holding its pinned tasks, that has left the
    pool since (killed) is not offered the round's tasks."""
    alive, dead = ("127.0.0.1", 10_001), ("127.0.0.1", 10_002)
    crowd = Crowd([alive, dead])
    crowd.join(dead, 1)
    batch = SimpleNamespace(crowd=crowd, message_seconds=None, lost=set(), resting=set(),
                            need={}, _eligible=lambda w: True, pinned={dead: [object()]},
                            session=SimpleNamespace(cores={alive: 1},
                                                    occupancy=defaultdict(int)))
    batch._least_loaded_idle = lambda *args: Reach._least_loaded_idle(batch, *args)
    assert Reach._round_order(batch) == [alive]


def test_a_graph_of_tiny_tasks_goes_several_to_a_message():
    dask = pytest.importorskip("dask")
    from distributed3.bench.graphs import tree

    x, answer = tree(1000)
    ntasks = len(x.__dask_graph__())
    with simulated(400) as address, Pool(address, secret=SECRET) as pool:
        pool.wait_for_workers(400, timeout=10)
        assert dask.compute(x, scheduler=pool.get)[0] == answer  # imports, connections
        before = sum(i["task_messages"] for i in pool.worker_info().values())
        assert dask.compute(x, scheduler=pool.get)[0] == answer
        messages = sum(i["task_messages"] for i in pool.worker_info().values()) - before
        # before, the first wave sent every root alone to a worker of its own: 690 frames
        # for 999 tasks.  Counted as frames, by the workers, the figure also took in
        # their peers' fetches and the center's deletes, which grow when a loaded machine
        # slows the graph down (3,316 frames once): task messages are what this is
        # about.  About 100, idle or beside two busy loops
        assert messages < ntasks / 4, (messages, ntasks)


def test_long_tasks_reach_every_core():
    with simulated(100, service_time=0.05) as address, Pool(address, secret=SECRET) as pool:
        pool.wait_for_workers(100, timeout=10)
        start = time.perf_counter()
        values = pool.map(abs, range(200), chunksize=1)
        assert pool.gather(values) == list(range(200))
        took = time.perf_counter() - start
        assert len(ran_on(values)) == 100
        assert took < 1.0, took  # two rounds of 0.05 s a core; 1.25 s on the probe's 8


def test_the_probe_doubles_until_it_covers_every_core():
    crowd = Crowd(["a", "b"])
    assert crowd.room(None) == PROBE_CORES
    widths = []
    while crowd.widen_probe(100):
        widths.append(crowd.probe_cores)
    assert widths == [16, 32, 64] and crowd.room(None) is None  # no bound: long tasks


def test_a_worker_that_joins_or_is_left_alone_stays_idle_to_the_crowd():
    crowd = Crowd(["a"])
    crowd.join("a", 2)
    crowd.join("b", 2)  # joined the cluster and took a task at once
    assert crowd.idle == set() and crowd.at_work == 4
    crowd.leave("b")
    assert crowd.idle == {"b"} and crowd.busy == {"a": 2}
    assert crowd.room(1e-5) == 0  # tiny tasks: two cores take all a pool sends
    assert crowd.crowded("b", 1e-5) and not crowd.crowded("b", 1e-5, pinned=True)


def _work(seconds):
    time.sleep(seconds)  # the task's work (I/O-like), not a wait for a condition
    return seconds


def test_medium_tasks_reach_every_multicore_worker():
    """16 workers of 4 cores: once replies say tasks take 8 ms, the idle workers join
    (the probe's 16 cores once counted as if they were 16 workers: 4 workers used)."""
    from distributed3.testing import cluster_in_thread

    with cluster_in_thread(16, ncores=4) as (center, _), Pool(center.address) as pool:
        pool.wait_for_workers(16, timeout=10)
        values = pool.map(_work, [0.008] * 400, chunksize=1)
        assert pool.gather(values) == [0.008] * 400
        assert len(ran_on(values)) > 8, len(ran_on(values))
