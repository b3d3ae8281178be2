"""Fixtures shared by the test modules: in-process clusters and a Pool on them.

``two_workers`` is a center and two one-core workers on port 0, in this process, on
the background loop that sync pools use (:func:`distributed3.testing.cluster_in_thread`);
``center`` and ``workers`` are its two halves and ``pool`` a ``Pool`` connected to it.
``pool4`` is a ``Pool`` on two workers of four threads each.  ``gate`` is
:data:`distributed3.testing.GATE`, closed for the test and opened after it, for tasks
that must not end until the test says so.  Everything is torn down after each test.
``slurm_engine`` and ``sshd_engine`` are a real one-node Slurm and a real sshd on
loopback (``tests/engines.py``), started once per module; they skip, with the reason,
where the programs are missing or cannot run.
"""
import psutil
import pytest

from distributed3 import Pool
from distributed3.testing import GATE, cluster_in_thread


@pytest.fixture
def two_workers():
    """``(center, [worker, worker])``: one core each, in this process."""
    with cluster_in_thread(2) as (center, workers):
        yield center, workers


@pytest.fixture
def center(two_workers):
    return two_workers[0]


@pytest.fixture
def workers(two_workers):
    return two_workers[1]


@pytest.fixture
def pool(center):
    """A ``Pool`` on ``two_workers``."""
    with Pool(center.address) as pool:
        yield pool


@pytest.fixture
def pool4():
    """A ``Pool`` on two in-process workers of four threads each: a task blocked on a
    gate does not hold up the tasks queued behind it on its worker."""
    with cluster_in_thread(2, ncores=4) as (center, _):
        with Pool(center.address) as pool:
            yield pool


def _all_end(procs, timeout=10):
    """True once every one of ``procs`` (psutil) has ended, waiting up to ``timeout`` s;
    zombies count as ended (their parent, not they, may be gone)."""
    psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def all_end():
    """``all_end(procs, timeout=10)``: whether the processes (psutil) have all ended."""
    return _all_end


@pytest.fixture
def gate():
    """:data:`distributed3.testing.GATE`, closed; opened after the test, whatever happened,
    so that no task waits on it past the test (a worker's close waits for its tasks)."""
    GATE.clear()
    yield GATE
    GATE.set()


@pytest.fixture(scope="module")
def slurm_engine(tmp_path_factory):
    """A one-node Slurm (munged, slurmctld, slurmd) for the module: it takes seconds."""
    import engines

    reason = engines.slurm_unavailable()
    if reason:
        pytest.skip(f"Slurm: {reason}")
    with engines.slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sshd_engine(tmp_path_factory):
    """An sshd with its own host and user keys, for the module."""
    import engines

    reason = engines.sshd_unavailable()
    if reason:
        pytest.skip(f"sshd: {reason}")
    with engines.sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
