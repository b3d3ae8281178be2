"""What every deployed cluster shares (deploy/cluster.py), over an engine kept in memory:
which workers scale() starts and lets go, adapting, and closing on error paths."""
import threading

import pytest

from distributed3.deploy.adaptive import Adaptive
from distributed3.deploy.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


class MemoryCluster(Cluster):
    """A cluster whose engine is a set of names, and whose center has no work and no
    registered worker: what scale, adapt and close decide, with nothing started."""

    engine = "memory"

    def __init__(self, tmp_path, backlog=0):
        super().__init__(log_directory=str(tmp_path), timeout=5)
        self.backlog, self.running, self.submitted = backlog, set(), []
        self.status = "running"

    def call_center(self, op, **kwargs):
        return {"backlog": {"client": self.backlog} if self.backlog else {}, "workers": {}}[op]

    def _launch(self, names):
        self.submitted += names
        self.running.update(names)
        return {n: n for n in names}

    def _stop(self, names):
        self.running.difference_update(names)

    def _alive(self):
        return set(self.running)


def test_adapting_does_not_start_again_workers_that_ended_while_idle(tmp_path):
    cluster = MemoryCluster(tmp_path)
    cluster.scale(2)
    cluster.running.clear()  # both jobs ended (their walltime, say); no work waits
    adaptive = Adaptive(cluster, minimum=0, maximum=4, interval=3600, grace=10)
    adaptive.stop()  # steps by hand from here
    adaptive.step(now=0)
    adaptive.step(now=1)
    assert len(cluster.submitted) == 2  # nothing submitted again for no work
    assert cluster.size() == 0


def test_scale_by_hand_stops_adapting_as_documented(tmp_path):
    cluster = MemoryCluster(tmp_path, backlog=8)
    cluster.adapt(minimum=0, maximum=8, interval=0.01)
    cluster.scale(1)
    assert cluster._adaptive is None
    assert cluster.size() == 1


class FailingStop(MemoryCluster):
    def _stop(self, names):
        raise RuntimeError("scancel timed out")


def test_close_finishes_even_when_stopping_the_workers_fails(tmp_path):
    cluster = FailingStop(tmp_path)
    cluster.scale(1)
    ended = threading.Event()
    cluster._finalizer = lambda: ended.set()  # where the center would be stopped
    with pytest.raises(RuntimeError, match="scancel"):
        cluster.close()
    assert cluster.status == "closed" and ended.is_set()
    cluster.close()  # and again: nothing left to do

