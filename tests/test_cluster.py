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



class Registering(MemoryCluster):
    """Workers register with the center only once ``self.works``."""

    works = False

    def call_center(self, op, **kwargs):
        if op == "workers" and self.works:
            return {("127.0.0.1", i): {"name": n, "nbytes": 0}
                    for i, n in enumerate(sorted(self.running))}  # fmt: skip
        return super().call_center(op, **kwargs)


def test_workers_that_end_before_registering_are_not_started_again_in_a_loop(tmp_path):
    cluster = Registering(tmp_path)
    cluster.scale(1)
    (tmp_path / f"{cluster.submitted[0]}.log").write_text("ImportError: no distributed3\n")
    cluster.running.clear()  # it died at start
    cluster.scale(1)
    assert len(cluster.submitted) == 1 and cluster.failed_starts == 1  # not at once
    cluster._retry_at = 0  # the wait is over (2 s, then 4, 8 ... at most 300)
    cluster.scale(1)
    assert len(cluster.submitted) == 2
    cluster.works = True  # fixed: this one registers, and the count starts again
    cluster.scale(1)
    assert cluster.failed_starts == 0 and cluster._retry_at == 0
