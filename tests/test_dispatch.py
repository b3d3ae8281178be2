"""Feeding tasks to the workers: where each runs, a task that fails, retries, time-outs,
resources."""
import os
import threading
import time
import types

import numpy as np
import pytest

from distributed3 import Pool, RemoteData, RemoteTraceback, WorkerLostError
from distributed3.client.dispatch import Batch
from distributed3.scheduling import pipeline_depth
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
        data = pool.scatter(list(range(400)))  # tiny tasks: up to 64 in flight a core
        pool.replicate(data, n=1)
        on_holder = [d for d in data if holder.address in d.workers]
        before = other.tasks_done
        out = pool.map(add, on_holder, [1] * len(on_holder), chunksize=1)
        assert pool.gather(out) == [d.get() + 1 for d in on_holder]
        assert other.tasks_done > before  # small inputs: the idle worker helped


def long_or_short(x):
    """Task 0 runs until the gate opens; the others end at once."""
    return held(x) if x == 0 else x


def test_tasks_of_unknown_length_go_one_per_free_core(pool, workers, gate):
    """Two blocking tasks on two idle one-core workers: one each, not both on the first
    worker offered the batch (where the second would wait for the first)."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=pool.map(held, [1, 2])))
    thread.start()
    try:
        wait_for_sync(lambda: [w.active for w in workers] == [1, 1], 10,
                      f"the two tasks did not run one per worker: {[w.active for w in workers]}")
    finally:
        gate.set()
        thread.join(10)
    assert pool.gather(result["out"]) == [1, 2]


def test_short_tasks_do_not_queue_behind_a_long_one(pool, workers, gate):
    """A long task first, then short ones: while the long one runs, the other worker
    runs every short one, none of them waiting behind it."""
    done = [w.tasks_done for w in workers]
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(out=pool.map(long_or_short, range(6), chunksize=1)))
    thread.start()
    try:
        wait_for_sync(lambda: sorted(w.tasks_done - d for w, d in zip(workers, done)) == [0, 5],
                      10, "the short tasks did not all run beside the long one")  # fmt: skip
        assert sorted(w.active for w in workers) == [0, 1]  # the long one, alone
    finally:
        gate.set()
        thread.join(10)
    assert pool.gather(result["out"]) == list(range(6))


def work(seconds):
    """A task that takes ``seconds`` (its work: it sleeps, as I/O would)."""
    if seconds:
        time.sleep(seconds)
    return seconds


def test_long_tasks_after_tiny_ones_do_not_queue_on_one_worker(pool, workers):
    """Tiny tasks fill each worker's pipeline, so the long ones after them all land in
    one worker's queue; once the other worker idles (or a reply says they are long),
    the queued ones are given back unrun and the two workers share them."""
    lengths = [0] * 300 + [0.05] * 8
    for _ in range(3):
        out = pool.map(work, lengths, chunksize=1)
        assert pool.gather(out) == lengths
        ran_on = [next(iter(h.workers)) for h in out[300:]]
        # before: [8].  [3, 5] where the give-back's round trip took as long as a task
        # (a loaded machine): one worker had ended its first before the other began
        counts = sorted(ran_on.count(w.address) for w in workers)
        assert counts in ([4, 4], [3, 5]), ran_on


def test_one_task_messages_travel_many_to_a_frame(pool, workers):
    """chunksize=1 still sends a message per task, but those made in one turn of the
    loop share a frame: tiny tasks are kept many per core in flight, so a frame carries
    dozens of them (about 26 here) and the workers read far fewer frames than tasks."""
    before = sum(w.counters["frames_in"] for w in workers)
    out = pool.map(add, range(2000), [1] * 2000, chunksize=1)
    assert pool.gather(out) == list(range(1, 2001))
    frames = sum(w.counters["frames_in"] for w in workers) - before
    assert frames < 2000 / 4, f"{frames} frames for 2000 one-task messages"


@pytest.mark.timeout(30)
def test_a_one_core_worker_runs_a_maps_tasks_in_their_order():
    """The tasks go out in the order the pool took them, also as its pipeline deepens
    and new runners start beside those at work: on a worker of one core, each starts
    after the one before.  (A runner at work used to send its next task before the new
    ones had sent theirs, so a map's first long task could run ahead of tiny ones.)"""
    with cluster_in_thread(1, ncores=1) as (center, _), Pool(center.address) as pool:
        for _ in range(3):
            starts = pool.map(lambda i: time.perf_counter(), range(400), chunksize=1)
            starts = [s.get() for s in starts]
            late = [i for i in range(1, len(starts)) if starts[i] < starts[i - 1]]
            assert not late, f"tasks {late[:5]} ran before the one sent ahead of them"


@pytest.mark.timeout(30)
def test_one_slow_reply_among_tiny_tasks_leaves_the_pipeline_deep():
    """The depth follows the middle of a worker's last three short replies: a tiny task
    that a busy machine slowed once moves nothing (it used to cut the depth to 4, so a
    map's tasks stopped queueing where they should); two in a row do; a long reply takes
    effect at once, so that nothing waits behind a long task."""
    with cluster_in_thread(1, ncores=1) as (center, _), Pool(center.address) as pool:

        async def depths(durations):
            batch = Batch(pool.session, [], "learning")
            (worker,) = pool.session.cores
            task = types.SimpleNamespace(size=1)
            out = []
            for seconds in durations:
                batch._learn(worker, {"duration": seconds}, task)
                out.append(batch.depth[worker])
            return out

        tiny, slow, long = 5e-5, 8e-4, 1.0
        got = run_in_cluster_loop(depths([tiny, tiny, slow, tiny, tiny, slow, slow, long, tiny,
                                          tiny]))  # fmt: skip
        deep, shallower = pipeline_depth(tiny), pipeline_depth(slow)
        assert deep > shallower > 1
        assert got == [deep, deep, deep, deep, deep, deep, shallower, 1, shallower, deep]
