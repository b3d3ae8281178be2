"""SLURMCluster against a real one-node Slurm (munged, slurmctld, slurmd on loopback,
started by tests/engines.py): jobs that run workers, scale, adapt, and end."""
import os
import signal
import time

import pytest

from distributed3 import Pool
from distributed3.deploy.jobqueue import SLURMCluster
from distributed3.utils import wait_for_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def slurm(slurm_engine):
    return slurm_engine  # conftest.py: started once for the module


@pytest.fixture
def cluster(slurm, tmp_path, monkeypatch):
    """A SLURMCluster whose center listens on loopback; the queue empty around it."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)  # sbatch, squeue, scancel find this Slurm
    slurm.wait_for_empty_queue()
    c = SLURMCluster(cores=1, memory="400MB", walltime="00:10:00", host="127.0.0.1",
                     death_timeout=3, timeout=30, log_directory=str(tmp_path / "logs"),
                     secret_directory=str(tmp_path / "secrets"))  # fmt: skip
    yield c
    c.close()
    slurm.scancel()
    slurm.wait_for_empty_queue()


def example(pool):
    """The seed's example: two maps and a sum through apply."""
    A = pool.map(lambda x: x**2, range(10))
    B = pool.map(lambda x: -x, A)
    return pool.apply(sum, [B]).get()


def queue_empties(slurm, timeout=30):
    wait_for_sync(lambda: not slurm.squeue(), timeout, f"jobs left in squeue: {slurm.squeue()}")


def test_a_pool_over_slurm_jobs_computes_and_close_cancels_them(slurm, cluster):
    cluster.scale(2)  # one array job of two elements
    assert len(slurm.squeue()) >= 1
    cluster.wait_for_workers(2)
    with Pool(cluster) as pool:
        assert pool.cluster is cluster
        assert example(pool) == -285
        assert sorted(pool.available_cores.values()) == [1, 1]
    logs = cluster.logs()
    assert len(cluster.workers) == 2
    for name in cluster.workers:
        assert "Register with center" in logs[name]
    assert "Register worker" in logs["center"]
    cluster.close()
    queue_empties(slurm)
    assert not os.path.exists(cluster.secret_file)


def test_scaling_down_retires_a_worker_and_keeps_its_data(slurm, cluster):
    cluster.scale(2)
    cluster.wait_for_workers(2)
    with Pool(cluster) as pool:
        data = pool.scatter(list(range(20)))
        held = {w for ws in pool.who_has(data).values() for w in ws}
        assert len(held) == 2  # both workers hold some
        cluster.scale(1)
        wait_for_sync(lambda: len(slurm.squeue()) == 1, 30, "the retired job did not end")
        wait_for_sync(lambda: pool.nworkers == 1, 10, "the pool still sees two workers")
        assert pool.gather(data) == list(range(20))  # handed to the one that stays
    assert len(cluster.workers) == 1


def test_adapt_grows_from_zero_under_work_and_shrinks_after(slurm, cluster):
    adaptive = cluster.adapt(minimum=0, maximum=4, interval=0.2, grace=1.0)
    assert not slurm.squeue()  # nothing runs before there is work
    seen = []
    with Pool(cluster) as pool:
        results = pool.map(time.sleep, [0.5] * 16, chunksize=1)
        assert pool.gather(results) == [None] * 16  # waited for the jobs adapt started
        seen.append(len(cluster.workers))
        queue_empties(slurm)  # back to the minimum once the work is done
    assert (0, 4) in [(before, after) for _, before, after in adaptive.log]
    assert adaptive.log[-1][2] == 0
    assert seen == [4]


def test_jobs_end_when_their_center_is_killed(slurm, cluster):
    cluster.scale(2)
    cluster.wait_for_workers(2)
    os.kill(cluster._center.pid, signal.SIGKILL)
    queue_empties(slurm, timeout=60)  # --death-timeout 3, then the jobs exit
    assert len(cluster.started) == 2 and not cluster.workers
    for name in cluster.started:
        assert "No center at" in cluster.logs()[name]
