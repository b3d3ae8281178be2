"""Scaling a cluster to its work: pools report their backlog to the center, the local
cluster scales and adapts, and workers let go hand their results over first."""

import pytest

from distributed3 import Pool
from distributed3.testing import released
from distributed3.deploy.adaptive import Adaptive, target
from distributed3.utils import wait_for_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def backlog(pool):
    return sum(pool.session.sync(pool.session.center("backlog")).values())


def test_a_pool_tells_the_center_its_unfinished_tasks(tmp_path):
    release = str(tmp_path / "go")
    with Pool(n_workers=1) as pool:
        assert backlog(pool) == 0
        results = [pool.submit(released, release, i) for i in range(6)]
        wait_for_sync(lambda: backlog(pool) == 6, 10, "the center did not hear of the 6")
        open(release, "w").close()
        assert pool.gather(results) == list(range(6))
        wait_for_sync(lambda: backlog(pool) == 0, 10, "the center still counts them")


def test_the_local_cluster_scales_down_without_losing_results():
    with Pool(n_workers=1) as pool:
        pool.cluster.scale(3)
        pool.wait_for_workers(3, timeout=30)
        assert pool.cluster.size() == 3
        results = pool.map(lambda x: x * 2, range(60), chunksize=1)
        assert len({w for ws in pool.who_has(results).values() for w in ws}) == 3
        done = {w: i["tasks_done"] for w, i in pool.worker_info().items()}
        pool.cluster.scale(1)
        wait_for_sync(lambda: pool.nworkers == 1, 30, "two workers did not retire")
        [stays] = pool.available_cores
        # every result was handed to the one that stays: nothing is computed again
        held = pool.who_has(results)
        assert all(ws == {stays} for ws in held.values()), {k: ws for k, ws in held.items()
                                                            if ws != {stays}}  # fmt: skip
        assert pool.gather(results) == [x * 2 for x in range(60)]
        assert pool.worker_info()[stays]["tasks_done"] == done[stays]


def test_the_local_cluster_adapts_to_waiting_work(tmp_path):
    release = str(tmp_path / "go")
    with Pool(n_workers=1) as pool:
        adaptive = pool.cluster.adapt(minimum=1, maximum=3, interval=0.1, grace=0.5)
        results = [pool.submit(released, release, i) for i in range(9)]
        wait_for_sync(lambda: pool.nworkers == 3, 30, "adapt did not grow to 3 workers")
        open(release, "w").close()
        assert pool.gather(results) == list(range(9))
        wait_for_sync(lambda: pool.nworkers == 1, 30, "adapt did not shrink back to 1")
        assert [(before, after) for _, before, after in adaptive.log] == [(1, 3), (3, 1)]
        pool.cluster.stop_adapting()


class Recorder:
    """A cluster as Adaptive sees it, recording what it is asked to do."""

    worker_cores, timeout, id = 2, 5, "test"

    def __init__(self, backlog, size):
        self.backlog, self._size, self.asked = backlog, size, []

    def call_center(self, op):
        assert op == "backlog"
        return {"client": self.backlog}

    def size(self):
        return self._size

    def scale(self, n):
        self.asked.append(n)
        self._size = n


def test_adaptive_grows_at_once_and_shrinks_only_after_the_grace():
    cluster = Recorder(backlog=7, size=0)
    adaptive = Adaptive(cluster, minimum=1, maximum=3, interval=3600, grace=10)
    adaptive.stop()  # steps by hand from here
    assert adaptive.step(now=0) == 3 and cluster.asked[-1] == 3  # 7 tasks, 2 cores each
    cluster.backlog = 0
    assert adaptive.step(now=1) == 3  # lower since 1 s: not yet
    assert adaptive.step(now=10.5) == 3
    cluster.backlog = 5  # work came back: the grace starts again after
    assert adaptive.step(now=11) == 3
    cluster.backlog = 0
    assert adaptive.step(now=12) == 3
    assert adaptive.step(now=22.5) == 1  # 10 s below: down to the minimum
    assert target(backlog=100, worker_cores=2, minimum=1, maximum=None) == 50
    with pytest.raises(ValueError, match="maximum 1 is below minimum 2"):
        Adaptive(cluster, minimum=2, maximum=1)
