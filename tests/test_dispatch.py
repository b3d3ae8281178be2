"""Feeding tasks to the workers: where each runs, a task that fails, retries, time-outs,
resources; and recovery: results whose every copy died computed again down a chain of
maps, scattered data sent again from the client's copy, or named when there is none."""
import gc
import os
import time

import numpy as np
import pytest

from distributed3 import Pool, RemoteData, RemoteTraceback, WorkerLostError
from distributed3.testing import (
    BIN,
    Proc,
    cluster_in_thread,
    held,
    process_cluster,
    run_in_cluster_loop,
)
from distributed3.utils import wait_for_sync

DCENTER, DWORKER = os.path.join(BIN, "dcenter"), os.path.join(BIN, "dworker")


def test_locality_map_moves_no_bytes(pool):
    A = pool.map(lambda i: np.full(50_000, i, dtype="f8"), range(8))
    before = pool.worker_info()
    B = pool.map(lambda a: a * 2, A)
    C = pool.map(lambda a, b: a + b, A, B)
    after = pool.worker_info()
    assert {w: i["peer_bytes_in"] for w, i in after.items()} == {
        w: i["peer_bytes_in"] for w, i in before.items()
    }
    who = pool.who_has(A + B + C)
    for a, b, c in zip(A, B, C):
        assert who[a.key] == who[b.key] == who[c.key]
    assert sum(i["tasks_done"] for i in after.values()) - sum(
        i["tasks_done"] for i in before.values()
    ) == 16
    assert all(i["tasks_done"] > 0 for i in after.values())  # both workers used


def test_apply_runs_where_most_bytes_are_and_pulls_the_rest(pool, workers):
    big, small = workers[0].address, workers[1].address
    sizes = {big: 200_000, small: 1_000}
    arrays = []
    for i in range(6):
        worker = big if i % 2 == 0 else small
        fut = run_in_cluster_loop(
            pool.connection_pool(worker).update_data(data={f"arr-{i}": np.ones(sizes[worker])})
        )
        arrays.append(RemoteData(f"arr-{i}", pool, {worker}, fut["nbytes"][f"arr-{i}"]))
    before = pool.worker_info()
    total = pool.apply(lambda xs: sum(float(x.sum()) for x in xs), [arrays])
    assert total.get() == 3 * 200_000 + 3 * 1_000
    after = pool.worker_info()
    assert pool.who_has([total])[total.key] == {big}
    moved = after[big]["peer_bytes_in"] - before[big]["peer_bytes_in"]
    assert moved == 3 * 1_000 * 8  # exactly the small arrays, nothing that was local
    assert after[small]["peer_bytes_in"] == before[small]["peer_bytes_in"]


def test_task_error_keeps_other_results(pool, workers):
    def inverse(x):
        return 1 / x

    out = pool.map(inverse, [1, 0, 4])
    assert [o.status for o in out] == ["finished", "error", "finished"]
    assert out[0].get() == 1.0 and out[2].get() == 0.25
    with pytest.raises(ZeroDivisionError) as info:
        out[1].get()
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "return 1 / x" in str(cause) and "inverse" in str(cause)
    assert "_run_task" not in str(cause)
    assert cause.peer in {f"127.0.0.1:{w.address[1]}" for w in workers}
    with pytest.raises(ZeroDivisionError):
        pool.gather(out)
    downstream = pool.map(lambda x: x + 1, out)
    assert downstream[1].status == "error"
    with pytest.raises(ZeroDivisionError):
        downstream[1].get()
    assert pool.gather([downstream[0], downstream[2]]) == [2.0, 1.25]


@pytest.mark.slow
def test_resources_limit_where_and_how_many_at_once():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--ncores", "4", "--resources", "GPU=2", "--name", "gpu"]), \
             Proc([DWORKER, address, "--ncores", "4", "--name", "cpu"]):  # fmt: skip
            with Pool(address) as pool:
                pool.wait_for_workers(2, timeout=20)

                def span(_):
                    start = time.time()
                    time.sleep(0.05)
                    return os.getpid(), start, time.time()

                spans = pool.gather(pool.map(span, range(10), resources={"GPU": 1}))
                assert len({pid for pid, _, _ in spans}) == 1  # all on the GPU worker
                most = max(sum(s <= t < e for _, s, e in spans) for _, t, _ in spans)
                assert most <= 2  # never more than GPU=2 at once
                with Pool(address, timeout=1) as impatient, \
                     pytest.raises(WorkerLostError, match="none has resources"):  # fmt: skip
                    impatient.map(abs, [1], resources={"TPU": 1})


def held_back(x):
    """``x``; a true ``x`` once the gate opens."""
    return held(x) if x else x


def test_task_timeout_names_the_task(gate):
    with cluster_in_thread(1) as (center, _):
        with Pool(center.address) as pool:
            try:  # task 1 can only end when the gate opens: the map must give up on it
                with pytest.raises(TimeoutError,
                                   match=r"task 1 of held_back .* did not finish within 0.3 s"):
                    pool.map(held_back, [0, 1], timeout=0.3)
            finally:
                gate.set()  # before the cluster closes: its worker waits for running tasks


@pytest.mark.slow
def test_task_that_kills_workers_is_retried_then_fails():
    with process_cluster(nworkers=3) as (address, _, workers):
        with Pool(address) as pool:

            def maybe_crash(x):
                if x == 0:
                    os._exit(3)  # takes the worker process down with it
                return x

            out = pool.map(maybe_crash, range(6), retries=1)
            assert [o.status for o in out[1:]] == ["finished"] * 5
            with pytest.raises(WorkerLostError, match="task 0 of maybe_crash .* 2 workers that died"):
                out[0].get()
            assert pool.gather(out[1:]) == [1, 2, 3, 4, 5]
            # the pool saw each connection break; the process may take a moment more to end
            wait_for_sync(lambda: sum(w.proc.poll() is not None for w in workers) == 2, 10,
                          "two workers should have died")  # fmt: skip
            assert sum(w.proc.poll() is not None for w in workers) == 2


# -- recovery: data whose every copy died with its worker ----------------------


@pytest.mark.slow
def test_lost_results_are_recomputed_through_a_chain():
    with process_cluster(nworkers=3) as (address, _, workers):
        with Pool(address) as pool:
            A = pool.map(lambda x: x + 1, range(30))
            B = pool.map(lambda a: a * 10, A)
            C = pool.map(lambda b: -b, B)
            holder = pool.worker_info()[next(iter(C[0].workers))]["pid"]
            next(w for w in workers if w.proc.pid == holder).kill()  # C[0], B[0], A[0] lived there
            assert pool.gather(C) == [-(x + 1) * 10 for x in range(30)]
            assert pool.apply(sum, [C]).get() == -4650


@pytest.mark.slow
def test_scattered_data_is_resent_or_named_when_lost():
    with process_cluster(nworkers=2) as (address, _, workers):
        with Pool(address) as pool:
            kept = np.arange(5)
            dropped = np.arange(3)
            handles = pool.scatter([kept, dropped])
            assert handles[0].workers != handles[1].workers
            lost_key = handles[1].key
            del dropped
            gc.collect()
            for w in workers:
                w.kill()
            with Proc([os.path.join(BIN, "dworker"), address, "--ncores", "1"]) as again:
                again.wait_for_line("Register with center")
                pool.wait_for_workers(1)
                assert list(handles[0].get()) == [0, 1, 2, 3, 4]  # sent again from our copy
                with pytest.raises(WorkerLostError, match=f"scattered data '{lost_key}'"):
                    handles[1].get()


def test_results_lost_with_a_worker_are_computed_again_where_their_inputs_live(pool, workers):
    A = pool.scatter([np.arange(1000), np.arange(2000)])  # one on each worker
    B = pool.map(lambda a: a * 10, A)  # too big to come back with the replies: on workers only
    C = pool.map(lambda b: b + 1, B)
    victim = next(w for w in workers if w.address in C[0].workers)  # it holds B[0], C[0] too
    survivor = next(w for w in workers if w is not victim)
    pool.replicate([A[0]], n=2)  # the input survives on the other worker; B[0] and C[0] not
    # a worker counts a task a moment after its reply left
    wait_for_sync(lambda: sum(w.tasks_done for w in workers) == 4, 5, "tasks not counted")
    done = survivor.tasks_done
    run_in_cluster_loop(victim.close(handoff=False))  # hands nothing over
    assert [int(c.sum()) for c in pool.gather(C)] == [10 * 999 * 1000 // 2 + 1000,
                                                      10 * 1999 * 2000 // 2 + 2000]  # fmt: skip
    wait_for_sync(lambda: survivor.tasks_done >= done + 2, 5, "nothing was computed again")
    assert survivor.tasks_done == done + 2  # B[0] again, then C[0] from it, nothing else
    assert pool.who_has(C)[C[0].key] == {survivor.address}


def add(x, y):
    return x + y


def test_a_task_runs_where_its_input_is_when_every_worker_is_idle(pool, workers):
    """The 2015 project's test: the holder of ``x`` is idle, so ``add(x, 10)`` runs there,
    whichever worker registered first; no byte moves."""
    data = pool.scatter([1, 2])
    assert {next(iter(d.workers)) for d in data} == {w.address for w in workers}
    for _ in range(3):
        for x in data:
            result = pool.apply(add, [x, 10])
            assert result.workers == x.workers
            assert result.get() == x.get() + 10
    assert all(info["peer_bytes_in"] == 0 for info in pool.worker_info().values())


def test_an_idle_worker_takes_queued_tasks_of_a_busy_holder_whatever_the_order(pool, workers):
    """Every input on one worker, more tasks than its slots: the other worker takes the
    tasks left queued from the start, whichever of the two is offered work first."""
    for holder in workers:
        other = next(w for w in workers if w is not holder)
        data = pool.scatter(list(range(40)))
        pool.replicate(data, n=1)
        on_holder = [d for d in data if holder.address in d.workers]
        before = other.tasks_done
        out = pool.map(add, on_holder, [1] * len(on_holder), chunksize=1)
        assert pool.gather(out) == [d.get() + 1 for d in on_holder]
        assert other.tasks_done > before  # small inputs: the idle worker helped
