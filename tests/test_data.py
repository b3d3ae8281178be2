"""``scatter``, ``gather``, ``delete`` and ``replicate``: data into and out of the workers."""
import threading

import numpy as np
import pytest

from distributed3 import DataLostError, MissingDataError, SerializationError, WorkerLostError
from distributed3.testing import run_in_cluster_loop
from distributed3.utils import wait_for_sync


def test_unpicklable_result_is_a_clear_error_on_gather(pool):
    handle = pool.apply(threading.Lock)
    assert handle.status == "finished"
    with pytest.raises(SerializationError, match="cannot pickle '_thread.lock'"):
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
    with pytest.raises(KeyError, match="was deleted"):
        data[0].get()
    assert pool.gather(data[5:]) == list(range(5, 10))


def test_scatter_broadcast_puts_a_copy_everywhere(pool, workers):
    (table,) = pool.scatter([{"a": 1}], broadcast=True)
    assert pool.who_has([table])[table.key] == {w.address for w in workers}
    assert all(w.data[table.key] == {"a": 1} for w in workers)
    out = pool.map(lambda i, t: t["a"] + i, range(10), t=table)
    assert pool.worker_info() and sum(i["peer_bytes_in"] for i in pool.worker_info().values()) == 0
    assert pool.gather(out) == list(range(1, 11))


def test_replicate_puts_copies_on_other_workers_which_outlive_the_first(pool, workers):
    A = pool.map(lambda x: x * 3, range(6))
    assert all(len(ws) == 1 for ws in pool.who_has(A).values())
    pool.replicate(A, n=2)
    assert all(ws == {w.address for w in workers} for ws in pool.who_has(A).values())
    assert all(a.key in w.data for a in A for w in workers)
    pool.replicate(A, n=5)  # no more copies than workers, and no error for asking
    assert all(len(ws) == 2 for ws in pool.who_has(A).values())
    # a worker counts a task a moment after its reply left
    wait_for_sync(lambda: sum(w.tasks_done for w in workers) == 6, 10, "tasks not counted")
    leaving, staying = workers
    done = staying.tasks_done
    run_in_cluster_loop(leaving.close(handoff=False))  # hands nothing over
    wait_for_sync(lambda: pool.nworkers == 1, 10, "the pool still sees the worker that left")
    assert pool.gather(A) == [x * 3 for x in range(6)]
    assert staying.tasks_done == done  # served from the copies, nothing computed again


def test_gather_keeps_the_structure_it_is_given(pool):
    """Lists, tuples and dicts of handles, nested, come back as the same structure of
    values, as dask's ``Client.gather`` does; a dict never comes back as its keys."""
    a, b = pool.scatter([1, [2, 3]])
    squares = pool.map(lambda x: x * x, range(4))
    assert pool.gather({"a": a, "b": 5}) == {"a": 1, "b": 5}
    assert pool.gather((a, b)) == (1, [2, 3])
    assert pool.gather([a, {"deep": (b, [a, "x"])}]) == [1, {"deep": ([2, 3], [1, "x"])}]
    assert pool.gather({"squares": squares, "n": 4}) == {"squares": [0, 1, 4, 9], "n": 4}
    assert pool.gather(h for h in (a, b)) == [1, [2, 3]]  # any iterable: a list
    assert pool.gather({}) == {} and pool.gather([]) == []


def test_data_that_is_gone_raises_one_family_from_gather_get_and_task_inputs(pool, workers):
    """Deleted, or the only copy of scattered data died and the client no longer holds
    it: a ``DataLostError``, a ``KeyError`` as a missing key of a dict is, however asked."""
    deleted = pool.scatter([1])
    pool.delete(deleted)
    for ask in (lambda: pool.gather(deleted), deleted[0].get):
        with pytest.raises(DataLostError, match="was deleted") as e:
            ask()
        assert isinstance(e.value, KeyError)
    with pytest.raises(DataLostError, match="was deleted"):
        pool.apply(abs, [deleted[0]]).get()
    array = np.arange(1000)
    (lost,) = pool.scatter([array])
    del array  # the pool keeps a weak reference only: it cannot send it again
    holder = next(w for w in workers if w.address in lost.workers)
    run_in_cluster_loop(holder.close(handoff=False))
    with pytest.raises(MissingDataError, match="only copy of scattered data") as e:
        pool.gather([lost])
    assert isinstance(e.value, (KeyError, DataLostError, WorkerLostError))
    with pytest.raises(DataLostError, match="only copy of scattered data"):
        lost.get()
    with pytest.raises(DataLostError, match="only copy of scattered data"):
        pool.apply(np.sum, [lost])


def _nothing_listens():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    sock.close()  # nothing listens there now: a connection to it is refused
    return address


@pytest.mark.parametrize("broadcast", [False, True])
def test_scatter_goes_around_a_worker_that_died_before_the_pool_heard(pool, workers, broadcast):
    dead = _nothing_listens()
    pool.session.cores[dead] = 1  # as if its death had not reached the pool yet
    try:
        data = pool.scatter(list(range(10)), broadcast=broadcast)
        assert pool.gather(data) == list(range(10))
        assert all(dead not in d.workers and d.workers for d in data)
        if broadcast:
            assert all(d.workers == {w.address for w in workers} for d in data)
    finally:
        pool.session.cores.pop(dead, None)


def test_scatter_with_no_worker_reachable_names_them(pool, workers):
    dead = _nothing_listens()
    saved = dict(pool.session.cores)
    pool.session.cores.clear()
    pool.session.cores[dead] = 1
    try:
        with pytest.raises(WorkerLostError,
                           match=r"could not put 1 value on any worker .*127\.0\.0\.1"):
            pool.scatter([1])
    finally:
        pool.session.cores.clear()
        pool.session.cores.update(saved)
