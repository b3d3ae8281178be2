"""``scatter``, ``gather``, ``delete`` and ``replicate``: data into and out of the workers."""
import threading

import pytest


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


def test_scatter_broadcast_puts_a_copy_everywhere(pool, workers):
    (table,) = pool.scatter([{"a": 1}], broadcast=True)
    assert pool.who_has([table])[table.key] == {w.address for w in workers}
    assert all(w.data[table.key] == {"a": 1} for w in workers)
    out = pool.map(lambda i, t: t["a"] + i, range(10), t=table)
    assert pool.worker_info() and sum(i["peer_bytes_in"] for i in pool.worker_info().values()) == 0
    assert pool.gather(out) == list(range(1, 11))
