"""Streaming, futures, chunks, constants sent once, seeds, progress."""
import random
import threading
import time

import numpy as np
import pytest

from distributed3 import FIRST_COMPLETED, Pool, as_completed, wait
from distributed3.testing import cluster_in_thread
from distributed3.utils import wait_for_sync

# in-process workers share this module: a task can block on it until the test lets go
GATE = threading.Event()


def gated(x):
    if x == 0:
        assert GATE.wait(10), "the test never opened the gate"
    return x * 10


def test_imap_unordered_yields_while_others_still_run(pool4):
    GATE.clear()
    try:
        it = pool4.imap_unordered(gated, range(5))
        first_four = sorted(next(it) for _ in range(4))  # task 0 is still blocked
        assert first_four == [10, 20, 30, 40]
        GATE.set()
        assert next(it) == 0
        with pytest.raises(StopIteration):
            next(it)
    finally:
        GATE.set()


def test_imap_keeps_order_and_raises_in_place(pool):
    assert list(pool.imap(lambda x, y: x * y, range(6), range(6), chunksize=4)) == [
        0, 1, 4, 9, 16, 25
    ]  # fmt: skip
    it = pool.imap(lambda x: 10 // x, [1, 2, 0, 5])
    assert next(it) == 10 and next(it) == 5
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_imap_releases_what_it_yielded(pool, workers):
    assert sum(pool.imap(lambda x: np.ones(1000) * x, range(20), chunksize=3)).sum() == 190_000
    deadline = time.monotonic() + 10
    while any(w.data for w in workers):
        assert time.monotonic() < deadline, "imap left its results on the workers"
        time.sleep(0.01)


def test_chunksize_sends_one_message_per_chunk(pool, workers):
    before = sum(w.counters["compute_chunk"] + w.counters["compute"] for w in workers)
    out = pool.map(lambda x: 100 // x, [1, 2, 0, 4, 5, 10, 20], chunksize=3)
    after = sum(w.counters["compute_chunk"] + w.counters["compute"] for w in workers)
    assert after - before == 3  # 3 + 3 + 1 elements
    assert [o.status for o in out] == ["finished", "finished", "error"] + ["finished"] * 4
    assert pool.gather([o for o in out if o.status == "finished"]) == [100, 50, 25, 20, 10, 5]
    with pytest.raises(ZeroDivisionError):
        out[2].get()
    assert len({o.key for o in out}) == 7  # one handle, and one key, per element


def test_submit_as_completed_and_wait(pool4):
    GATE.clear()
    try:
        futures = [pool4.submit(gated, x) for x in range(4)]
        assert not futures[0].done()
        order = []
        for f in as_completed(futures[1:]):
            order.append(f.result())
        assert sorted(order) == [10, 20, 30]
        done, not_done = wait(futures, timeout=0.2)
        assert futures[0] in not_done and len(done) == 3
        with pytest.raises(TimeoutError):
            list(as_completed([futures[0]], timeout=0.1))
        GATE.set()
        done, not_done = wait(futures, return_when=FIRST_COMPLETED)
        assert done and futures[0].result(timeout=5) == 0
    finally:
        GATE.set()
    failing = pool4.submit(lambda: 1 / 0)
    (f,) = list(as_completed([failing]))
    with pytest.raises(ZeroDivisionError):
        f.result()
    downstream = pool4.submit(lambda a, b: a + b, pool4.submit(pow, 2, 3), 1)
    assert downstream.result() == 9  # a pending input is waited for


def test_big_constant_reaches_each_worker_once(pool, workers):
    model = np.random.default_rng(0).random(250_000)  # 2 MB
    before = [w.counters["bytes_in"] for w in workers]
    out = pool.map(lambda x, model: float(model[x]), range(40), model=model)
    assert pool.gather(out) == [float(model[x]) for x in range(40)]
    received = [w.counters["bytes_in"] - b for w, b in zip(workers, before)]
    assert all(model.nbytes <= r < 1.5 * model.nbytes for r in received), received
    # a worker's loop counts a task a moment after its reply left
    wait_for_sync(lambda: all(w.tasks_done > 0 for w in workers), 5, "a worker ran no task")


def test_scatter_broadcast_puts_a_copy_everywhere(pool, workers):
    (table,) = pool.scatter([{"a": 1}], broadcast=True)
    assert pool.who_has([table])[table.key] == {w.address for w in workers}
    assert all(w.data[table.key] == {"a": 1} for w in workers)
    out = pool.map(lambda i, t: t["a"] + i, range(10), t=table)
    assert pool.worker_info() and sum(i["peer_bytes_in"] for i in pool.worker_info().values()) == 0
    assert pool.gather(out) == list(range(1, 11))


def draw(x):
    return (x, random.random(), float(np.random.rand()))


@pytest.mark.parametrize("chunksize", [1, 3])
def test_seeded_maps_are_reproducible_across_worker_counts(chunksize):
    results = []
    for nworkers in (1, 3):
        with cluster_in_thread(nworkers) as (center, _):
            with Pool(center.address) as pool:
                results.append(pool.gather(pool.map(draw, range(12), seed=123,
                                                    chunksize=chunksize)))  # fmt: skip
                other = pool.gather(pool.map(draw, range(12), seed=124))
    assert results[0] == results[1]
    assert len({r[1] for r in results[0]}) == 12  # different per task
    assert other != results[0]


def test_progress_bar_with_tqdm(pool, capsys):
    pytest.importorskip("tqdm")
    pool.map(lambda x: x, range(10), progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "lambda" in err and "task/s" in err  # tqdm's own format


def test_progress_bar_without_tqdm(pool, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    assert sorted(pool.imap_unordered(abs, range(-5, 5), progress=True)) == sorted(
        abs(x) for x in range(-5, 5)
    )
    err = capsys.readouterr().err
    assert "abs: 10/10 100%" in err and "tasks/s" in err and "ETA" in err
