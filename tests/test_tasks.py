"""Turning a map into tasks: chunks by where their inputs live, one message per chunk,
the chunk size chosen, seeds, big constants sent once."""
import random

import numpy as np
import pytest

from distributed3 import Pool
from distributed3.testing import cluster_in_thread
from distributed3.utils import wait_for_sync


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


def test_big_constant_reaches_each_worker_once(pool, workers):
    model = np.random.default_rng(0).random(250_000)  # 2 MB
    before = [w.counters["bytes_in"] for w in workers]
    out = pool.map(lambda x, model: float(model[x]), range(40), model=model)
    assert pool.gather(out) == [float(model[x]) for x in range(40)]
    received = [w.counters["bytes_in"] - b for w, b in zip(workers, before)]
    assert all(model.nbytes <= r < 1.5 * model.nbytes for r in received), received
    # a worker's loop counts a task a moment after its reply left
    wait_for_sync(lambda: all(w.tasks_done > 0 for w in workers), 5, "a worker ran no task")


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


def test_a_map_over_a_numpy_array_sends_slices_and_gets_its_scalars_back(pool, workers):
    """A numeric array goes in slices of itself, each one buffer, not a pickled scalar
    per element; numpy scalar results come back as one array per chunk, unpickled as
    the same scalars."""
    arr = np.arange(20_000, dtype="f8")
    before = sum(w.counters["bytes_in"] for w in workers)
    out = pool.gather(pool.map(lambda x: x * 2, arr))
    sent = sum(w.counters["bytes_in"] for w in workers) - before
    assert out == [x * 2 for x in arr] and type(out[0]) is np.float64
    assert sent < 1.5 * arr.nbytes  # a pickled np.float64 each: about 2.5 times that
    rows = np.arange(12).reshape(4, 3)
    assert [list(r) for r in pool.gather(pool.map(lambda r: r + 1, rows))] == [
        list(r + 1) for r in rows]  # fmt: skip
    mixed = np.array([1, "a", None], dtype=object)  # may hold anything: element by element
    assert pool.gather(pool.map(repr, mixed)) == ["1", "'a'", "None"]
    seeded = pool.gather(pool.map(lambda x: x + random.random(), arr[:100], seed=7))
    assert seeded == pool.gather(pool.map(lambda x: x + random.random(), list(arr[:100]),
                                          seed=7))  # fmt: skip


@pytest.mark.timeout(60)
def test_a_result_of_another_clusters_pool_as_input_fails_naming_both(pool, center):
    """Its workers hold a secret ours do not: rather than an AuthenticationError from a
    worker, the call says whose result it is.  A second pool on our cluster is fine."""
    with Pool(n_workers=1) as other:
        theirs = other.scatter([5])[0]
        where = r"the cluster at 127\.0\.0\.1:\d+, not of this one on 127\.0\.0\.1:\d+"
        for call in (lambda: pool.apply(abs, (theirs,)), lambda: pool.map(abs, [theirs]),
                     lambda: pool.map(lambda x, y: x, [1], y=theirs)):  # fmt: skip
            with pytest.raises(ValueError, match=where):
                call()
        with pytest.raises(ValueError, match=where):
            pool.submit(abs, theirs).result(timeout=10)
    with Pool(center.address) as second:
        ours = second.scatter([-7])[0]
        assert pool.apply(abs, (ours,)).get() == 7
