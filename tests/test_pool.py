"""Pool: the issue's example, map's arguments, errors at submission, async forms,
membership, secrets."""
import asyncio
import threading

import numpy as np
import pytest

from distributed3 import (
    AuthenticationError,
    Pool,
    RemoteData,
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


def test_addresses_in_the_forms_dask_prints(center):
    host, port = center.address
    with Pool(f"tcp://{host}:{port}") as pool:
        assert pool.apply(abs, (-3,)).get() == 3
    with pytest.raises(ValueError, match="is a TLS address: give tls="):
        Pool(f"tls://{host}:{port}")
    with pytest.raises(ValueError, match="tcp:// and tls:// only"):
        Pool(f"udp://{host}:{port}")


def make_lock(_=None):
    import threading

    return threading.Lock()


class Locked(Exception):
    """An exception holding what cannot be pickled (a lock), however exceptions pickle."""

    def __init__(self, what):
        super().__init__(what)
        self.lock = make_lock()


def raise_locked():
    raise Locked("1 and 2")


def test_a_result_that_cannot_leave_its_worker_is_named(pool):
    lock = pool.apply(make_lock)
    with pytest.raises(SerializationError, match=rf"the task result '{lock.key}' cannot be "
                       r"pickled to leave worker .*cannot pickle '_thread.lock'"):  # fmt: skip
        lock.get()
    assert pool.apply(lambda l: type(l).__name__, [lock]).get() == "lock"  # usable there
    results = pool.map(lambda x: make_lock() if x == 3 else x, range(6), chunksize=1)
    with pytest.raises(SerializationError, match=f"'{results[3].key}'"):
        pool.gather(results)
    assert pool.gather(results[:3]) == [0, 1, 2]


def test_an_exception_that_cannot_be_rebuilt_still_says_what_it_was(pool):
    with pytest.raises(TaskError, match=r"Locked: 1 and 2 \(the exception could not travel"):
        pool.apply(raise_locked).get()
