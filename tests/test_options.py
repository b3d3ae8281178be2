"""Options travel whole: one record, one default each, reaching every path that makes tasks."""
import dataclasses
import inspect
import threading

import numpy as np
import pytest

from distributed3 import Pool, Worker
from distributed3.client.options import DEFAULTS, Options
from distributed3.testing import cluster_in_thread, held, run_in_cluster_loop
from distributed3.utils import wait_for_sync

SLOW_AGAIN = threading.Event()  # set: `fast_once` waits on the gate, as a recomputation


def inc(x):
    return x + 1



def big(x):
    """A result too big to come back with the task's reply: gathering it fetches it."""
    return np.full(1000, x + 1)


def fast_once(x):
    if SLOW_AGAIN.is_set():
        held(x)
    return big(x)


@pytest.fixture
def slow_again(gate):
    SLOW_AGAIN.clear()
    yield gate


def test_the_record_is_built_by_keyword_and_cannot_change():
    with pytest.raises(TypeError):
        Options(None, 3)
    options = Options(timeout=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.retries = 0
    assert options.replace(retries=0) == Options(timeout=1, retries=0)


@pytest.mark.parametrize("method", ["map", "amap", "apply", "aapply", "imap", "imap_unordered",
                                    "aimap"])
def test_every_pool_method_takes_its_defaults_from_the_one_record(method):
    params = inspect.signature(getattr(Pool, method)).parameters
    fields = {f.name for f in dataclasses.fields(Options)}
    taken = [name for name in params if name in fields]
    assert {"timeout", "retries"} <= set(taken)
    for name in taken:
        assert params[name].default == getattr(DEFAULTS, name), (method, name)


def kill(worker):
    run_in_cluster_loop(worker.close(handoff=False))


def test_recomputing_lost_results_runs_under_the_call_s_resources():
    with cluster_in_thread(1) as (center, (plain,)):
        gpus = [Worker(center.address, ncores=1, resources={"GPU": 1}) for _ in range(2)]
        for w in gpus:
            run_in_cluster_loop(w.start(port=0))
        try:
            with Pool(center.address, timeout=5) as pool:
                wait_for_sync(lambda: len(pool.worker_resources) == 3, 5, "no GPU workers")
                out = pool.map(big, pool.scatter(list(range(6))), resources={"GPU": 1})
                assert all(h.workers <= {g.address for g in gpus} for h in out)
                victim = next(g for g in gpus if g.address in out[0].workers)
                lost = [h.key for h in out if victim.address in h.workers]
                done_before = plain.tasks_done
                kill(victim)
                assert [a[0] for a in pool.gather(out)] == list(range(1, 7))  # computed again...
                survivor = next(g for g in gpus if g is not victim)
                assert all(k in survivor.data for k in lost)  # ...where a GPU is
                assert plain.tasks_done == done_before
        finally:
            for w in gpus:
                run_in_cluster_loop(w.close())


def test_recomputing_lost_results_runs_under_the_call_s_timeout(slow_again):
    with cluster_in_thread(2) as (center, workers):
        with Pool(center.address, timeout=5) as pool:
            out = pool.map(fast_once, pool.scatter([1, 2]), timeout=0.5)
            holder = next(w for w in workers if w.address in out[0].workers)
            SLOW_AGAIN.set()
            kill(holder)
            with pytest.raises(TimeoutError, match=r"did not finish within 0.5 s"):
                pool.gather(out)


def test_streams_take_a_timeout(gate):
    with cluster_in_thread(2) as (center, _):
        with Pool(center.address, timeout=5) as pool:
            with pytest.raises(TimeoutError, match=r"task 0 of held .* within 0.3 s"):
                list(pool.imap(held, [1], timeout=0.3))
            with pytest.raises(TimeoutError, match=r"within 0.3 s"):
                list(pool.imap_unordered(held, [1], timeout=0.3))


def test_streams_take_resources():
    with cluster_in_thread(1) as (center, (plain,)):
        gpu = Worker(center.address, ncores=1, resources={"GPU": 1})
        run_in_cluster_loop(gpu.start(port=0))
        try:
            with Pool(center.address, timeout=5) as pool:
                wait_for_sync(lambda: len(pool.worker_resources) == 2, 5, "no GPU worker")
                before = plain.tasks_done
                assert list(pool.imap(inc, range(8), resources={"GPU": 1})) == list(range(1, 9))
                assert sorted(pool.imap_unordered(inc, range(4), resources={"GPU": 1})) == [
                    1, 2, 3, 4]  # fmt: skip
                # a reply leaves from the task thread; the loop counts the task just after
                wait_for_sync(lambda: gpu.tasks_done >= 12, 5, "the GPU worker's count")
                assert plain.tasks_done == before
        finally:
            run_in_cluster_loop(gpu.close())
