"""Pool: map/apply/scatter/gather/delete, locality, errors, async forms, membership."""
import asyncio
import threading

import numpy as np
import psutil
import pytest

from distributed3 import (
    AuthenticationError,
    Pool,
    RemoteData,
    RemoteTraceback,
    SerializationError,
    TaskError,
    Worker,
)
from distributed3.testing import cluster, cluster_in_thread, gen_test, run_in_cluster_loop
from distributed3.utils import wait_for_sync


def test_issue_example(pool, center, workers):
    pool.sync_center()
    assert pool.available_cores == {w.address: 1 for w in workers}
    A = pool.map(lambda x: x**2, range(10))
    assert all(isinstance(a, RemoteData) for a in A)
    B = pool.map(lambda x: -x, A)
    total = pool.apply(sum, [B])
    assert total.get() == -285
    assert pool.gather(A) == [x**2 for x in range(10)]
    assert repr(A[0]) == f"RemoteData<center={center.address[0]}:{center.address[1]}, key={A[0].key}>"
    # results stayed on the workers: no worker holds a copy of another's result
    who_has = pool.who_has(A + B)
    assert all(len(holders) == 1 for holders in who_has.values())
    # the center hears of results from the workers' batched reports, a moment after
    wait_for_sync(lambda: {k for keys in pool.has_what().values() for k in keys}
                  >= {a.key for a in A}, 5, "the center never heard of A")  # fmt: skip


def test_map_many_iterables_and_kwargs(pool):
    out = pool.map(lambda x, y, z=0: x * y + z, [1, 2, 3], [10, 20, 30], z=5)
    assert pool.gather(out) == [15, 45, 95]
    assert pool.map(lambda x: x, []) == []
    with pytest.raises(TypeError):
        pool.map(lambda x: x)


def test_remote_data_nested_in_arguments(pool):
    x, y, z = pool.scatter([1, 2, 3])
    out = pool.apply(lambda a, b, c=None: a[0] + b["k"][1] + c, ([x],),
                     {"b": {"k": (0, y)}, "c": z})  # fmt: skip
    assert out.get() == 6
    assert pool.gather([x, 7, y]) == [1, 7, 2]


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


def test_big_map_is_chunked_by_where_its_inputs_are(pool, workers):
    """Past 32 tasks per core a map goes in chunks; a chunk only holds elements whose
    inputs live on the same worker, so chunking moves no data either."""
    A = pool.map(lambda i: np.full(1_000, i, dtype="f8"), range(300))
    assert {frozenset(a.workers) for a in A} == {frozenset({w.address}) for w in workers}
    before = pool.worker_info()
    messages = {w.address: w.counters["compute_chunk"] for w in workers}
    B = pool.map(lambda a: float(a[0]), A)  # default chunksize
    after = pool.worker_info()
    assert pool.gather(B) == [float(i) for i in range(300)]
    assert all(after[w]["peer_bytes_in"] == before[w]["peer_bytes_in"] for w in after)
    assert all(b.workers == a.workers for a, b in zip(A, B))
    chunks = sum(w.counters["compute_chunk"] - messages[w.address] for w in workers)
    assert 2 <= chunks <= 40  # tens of messages, not 300


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


def test_error_raised_by_a_builtin_task_shows_no_worker_frames(pool):
    [bad] = pool.map(int, ["abc"])
    with pytest.raises(ValueError, match="invalid literal") as info:
        bad.get()
    text = str(info.value.__cause__)
    assert "invalid literal for int()" in text
    assert "execute.py" not in text and "_run_task" not in text


def test_unpicklable_argument_is_a_clear_error(pool, center):
    keys_before = set(pool.who_has())
    with pytest.raises(SerializationError, match="_thread.lock") as info:
        pool.map(lambda x: x, [1, threading.Lock(), 3])
    assert isinstance(info.value, TypeError)
    assert "task 1" in str(info.value)
    with pytest.raises(SerializationError, match="task 0 of len"):  # a lone task too
        pool.apply(len, (threading.Lock(),))
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="could not serialize function"):
        pool.apply(lambda: lock.locked())
    # nothing leaked, and the pool still works
    wait_for_sync(lambda: set(center.who_has) == keys_before, 5, "keys of aborted map leaked")
    assert pool.apply(lambda: 42).get() == 42


def _leave(code):
    raise SystemExit(code)


def test_a_task_calling_sys_exit_fails_alone(pool):
    with pytest.raises(TaskError, match=r"SystemExit\(3\)"):
        pool.apply(_leave, (3,)).get()
    assert pool.apply(lambda: 42).get() == 42  # the worker, and the caller, carry on


def test_unpicklable_result_is_a_clear_error_on_gather(pool):
    handle = pool.apply(threading.Lock)
    assert handle.status == "finished"
    with pytest.raises(Exception, match="lock"):
        handle.get()
    assert pool.apply(lambda: "still fine").get() == "still fine"


def test_scatter_gather_delete(pool, center, workers):
    data = pool.scatter(range(10))
    assert len({next(iter(h.workers)) for h in data}) == 2
    before = [w.counters["get_data"] for w in workers]
    assert pool.gather(data) == list(range(10))
    assert [w.counters["get_data"] - b for w, b in zip(workers, before)] == [1, 1]
    pool.delete(data[:5])
    assert all(h.status == "deleted" for h in data[:5])
    assert not any(h.key in w.data for h in data[:5] for w in workers)
    assert not any(h.key in center.who_has for h in data[:5])
    with pytest.raises(KeyError):
        data[0].get()
    assert pool.gather(data[5:]) == list(range(5, 10))


def test_worker_info_fields(pool, workers):
    pool.scatter([np.zeros(100)])
    info = pool.worker_info()
    assert set(info) == {w.address for w in workers}
    for fields in info.values():
        assert {"ncores", "nkeys", "nbytes", "tasks_done", "peer_bytes_in"} <= set(fields)
    assert sum(i["nbytes"] for i in info.values()) == 800


def test_worker_joining_later_gets_tasks():
    with cluster_in_thread(1) as (center, workers):
        with Pool(center.address) as pool:
            assert pool.nworkers == 1
            late = run_in_cluster_loop(Worker(center.address, ncores=1).start(port=0))
            try:
                pool.wait_for_workers(2, timeout=5)
                out = pool.map(lambda x: x + 1, range(40))
                assert pool.gather(out) == list(range(1, 41))
                # a worker's loop counts a task a moment after its reply left
                wait_for_sync(lambda: late.tasks_done > 0 and workers[0].tasks_done > 0, 5,
                              "a worker ran no task")  # fmt: skip
            finally:
                run_in_cluster_loop(late.close())
            wait_for_sync(lambda: pool.nworkers == 1, 5, "pool did not see the worker leave")


def test_async_forms_from_another_loop(pool):

    async def main():  # the caller's own loop, as in Jupyter
        A = await pool.amap(lambda x: x + 1, range(5))
        total = await pool.aapply(sum, [A])
        scattered = await pool.ascatter([10, 20])
        assert await total.aget() == 15
        assert await pool.agather(scattered) == [10, 20]
        assert set(await pool.awho_has(scattered)) == {h.key for h in scattered}
        await pool.adelete(scattered)
        info = await pool.aworker_info()
        assert len(info) == 2
        return True

    assert asyncio.run(main())


def test_sync_calls_while_a_loop_runs_in_this_thread(pool):

    async def notebook_cell():  # Jupyter: a loop is running, the user calls sync methods
        return pool.gather(pool.map(lambda x: x * 3, range(4)))

    assert asyncio.run(notebook_cell()) == [0, 3, 6, 9]


@gen_test(timeout=30)
async def test_asynchronous_pool_in_the_same_loop():
    async with cluster(2) as (center, workers):
        async with Pool(center.address, asynchronous=True) as pool:
            A = await pool.amap(lambda x: x * 2, range(6))
            assert await pool.agather(A) == [0, 2, 4, 6, 8, 10]
            with pytest.raises(RuntimeError, match="asynchronous"):
                pool.map(len, [])
        assert pool.status == "closed"


def test_secret_required_and_checked():
    with cluster_in_thread(1, secret="s3cret") as (center, _):
        with Pool(center.address, secret="s3cret") as pool:
            assert pool.apply(lambda: 1).get() == 1
        with pytest.raises(AuthenticationError, match="rejected our secret"):
            Pool(center.address, secret="wrong")
        with pytest.raises(AuthenticationError, match="requires a secret"):
            Pool(center.address)


def test_embedded_default_pool_starts_and_stops_processes():
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with Pool() as pool:
        ncpu = psutil.cpu_count() or 1
        assert pool.nworkers == ncpu
        assert all(n == 1 for n in pool.available_cores.values())
        assert all(h == "127.0.0.1" for h, _ in pool.available_cores)
        started = {p.pid for p in me.children(recursive=True)} - before
        assert len(started) == ncpu + 1  # the workers and the center
        assert pool.cluster.center_proc.pid in started
        assert pool.gather(pool.map(lambda x: x + 1, range(10))) == list(range(1, 11))
        assert pool.cluster.secret  # a random secret, never open
    pool.close()  # idempotent
    assert pool.status == "closed"
    alive = {p.pid for p in me.children(recursive=True)} & started
    assert not alive


def test_embedded_pool_with_n_workers_and_close_twice():
    pool = Pool(n_workers=1)
    try:
        assert pool.nworkers == 1
        assert pool.apply(pow, (2, 10)).get() == 1024
    finally:
        pool.close()
        pool.close()
    with pytest.raises(Exception, match="not running"):
        pool.map(len, ["a"])


def test_function_from_a_module_workers_cannot_import():
    import sys
    import types

    module = types.ModuleType("only_in_this_process")

    def helper(x):
        return x

    helper.__module__ = module.__name__
    helper.__qualname__ = "helper"
    module.helper = helper
    sys.modules[module.__name__] = module
    try:
        with Pool(n_workers=1) as pool:  # a real worker process, without that module
            out = pool.apply(helper, (1,))
            with pytest.raises(ImportError, match="only_in_this_process.*workers can import"):
                out.get()
    finally:
        del sys.modules[module.__name__]


def test_small_results_come_with_the_reply_and_stay_on_the_worker(pool, workers):
    small, big = pool.map(lambda n: list(range(n)), [3, 10_000])
    assert small.inline is not None and big.inline is None
    served = {w.address: w.counters["get_data"] for w in workers}
    first, second = small.get(), pool.gather([small])[0]
    assert first == second == [0, 1, 2] and first is not second  # a fresh copy each time
    assert {w.address: w.counters["get_data"] for w in workers} == served  # no request
    assert len(big.get()) == 10_000
    # the worker keeps the small one too: a task there uses it in place
    assert pool.apply(len, [small]).get() == 3
    holders = {w.address for w in workers if small.key in w.data}
    assert holders == small.workers


def test_tasks_may_run_their_own_event_loop(pool):
    """Tasks run in worker threads, never on the worker's loop: a task may call
    asyncio.run, however often (and however quick) it is."""
    import asyncio

    def with_loop(x):
        async def double():
            return 2 * x

        return asyncio.run(double())

    assert [pool.apply(with_loop, (i,)).get() for i in range(6)] == [0, 2, 4, 6, 8, 10]
    assert pool.gather(pool.map(with_loop, range(100))) == [2 * i for i in range(100)]
