"""A chunked map keeps one key per chunk; its handles are made when asked for."""
import asyncio
import gc
import pickle
import random
import time

import numpy as np
import pytest

from distributed3 import DistributedError, MissingDataError, Pool, RemoteData
from distributed3.client.results import RemoteList, ResultGroup
from distributed3.testing import cluster_in_thread, run_in_cluster_loop
from distributed3.utils import wait_for_sync


def held(workers):
    """``{key: worker}`` of everything the workers hold, once their loop caught up."""
    run_in_cluster_loop(_caught_up(workers))
    return {k: w.address for w in workers for k in w.data}


def released(workers):
    """Whether the workers hold nothing, once the garbage collector has run: handles
    in a reference cycle (an exception's traceback, in these in-process clusters) go
    only then, and nothing else may trigger a collection while the test waits."""
    gc.collect()
    return not held(workers)


def kill_holder(workers, chunk):
    """Close the worker holding ``chunk`` without handing its data over; the others."""
    keys = held(workers)
    victim = next(w for w in workers if w.address == keys[chunk.key])
    run_in_cluster_loop(victim.close(handoff=False))
    return [w for w in workers if w is not victim]


async def _caught_up(workers):
    for w in workers:
        w.catch_up()


def inc(x):
    return x + 1


def test_one_key_per_chunk_and_lazy_handles(pool, center, workers):
    out = pool.map(inc, range(1000), chunksize=100)
    assert isinstance(out, RemoteList) and len(out) == 1000
    assert [type(s) for s in out.spans] == [ResultGroup] * 10
    assert not any(g.made() for g in out.spans)  # no handle made yet
    keys = held(workers)
    assert set(keys) == {g.key for g in out.spans}  # 10 keys, not 1000
    assert sum(w.tasks_done for w in workers) == 1000
    h = out[205]
    assert isinstance(h, RemoteData) and h is out[205] and h is out[-795]
    assert h.key == f"{out.spans[2].key}#5" and h.get() == 206
    assert h.workers == {keys[out.spans[2].key]}
    assert pool.who_has([h]) == {h.key: {keys[out.spans[2].key]}}  # resolved by the center
    assert [x.get() for x in out[998:]] == [999, 1000]
    assert pool.gather(out) == list(range(1, 1001))
    assert pool.gather(out[10:13] + [7]) == [11, 12, 13, 7]
    assert out == list(out) and pool.apply(sum, [out]).get() == sum(range(1, 1001))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(out)


def test_a_chunk_lives_while_its_list_or_any_of_its_handles_does(pool, workers):
    out = pool.map(inc, range(400), chunksize=100)
    kept = out[150]
    chunk = out.spans[1].key
    del out
    gc.collect()
    wait_for_sync(lambda: set(held(workers)) == {chunk}, 10, "other chunks not released")
    assert kept.get() == 151
    del kept
    gc.collect()
    wait_for_sync(lambda: released(workers), 10, "the last chunk was not released")


def test_chained_map_over_chunk_elements_moves_no_bytes(pool, workers):
    a = pool.map(lambda i: np.full(100, i), range(300), chunksize=30)
    before = pool.worker_info()
    b = pool.map(lambda x: float(x.sum()), a)
    after = pool.worker_info()
    assert all(after[w]["peer_bytes_in"] == before[w]["peer_bytes_in"] for w in after)
    assert pool.gather(b) == [100.0 * i for i in range(300)]
    assert all(x.workers == y.workers for x, y in zip(a, b))


def test_a_failed_element_fails_alone(pool):
    out = pool.map(lambda x: 1 // (x - 3), range(200), chunksize=50)
    assert out[3].status == "error" and out[4].status == "finished"
    with pytest.raises(ZeroDivisionError):
        pool.gather(out)
    with pytest.raises(ZeroDivisionError):
        out[3].get()
    assert pool.gather(out[4:6]) == [1, 0]


def test_big_results_are_fetched_from_the_chunk(pool, workers):
    out = pool.map(lambda i: np.full(2_000, i, dtype="f8"), range(40), chunksize=10)
    assert all(g.pickled is None for g in out.spans)  # too big to come with the reply
    values = pool.gather(out)
    assert [float(v[0]) for v in values] == [float(i) for i in range(40)]
    assert float(out[17].get()[0]) == 17.0


def test_a_lost_chunk_is_recomputed_and_everything_released_after(pool, workers):
    out = pool.map(lambda i: np.full(2_000, i, dtype="f8"), range(40), chunksize=10)
    alive = kill_holder(workers, out.spans[0])
    values = pool.gather(out)  # element by element: the lost ones computed again
    assert [float(v[0]) for v in values] == [float(i) for i in range(40)]
    assert any("#" in k for k in held(alive))  # recomputed elements, kept one by one
    del out, values
    gc.collect()
    wait_for_sync(lambda: released(alive), 10, "recomputed elements not released")


def test_copies_of_elements_go_with_their_chunk(pool, workers):
    out = pool.map(inc, range(100), chunksize=50)
    pool.replicate([out[0]], n=2)
    holders = {w.address for w in workers if out[0].key in w.data}
    assert len(holders) == 1  # the copy, on the worker without the chunk
    assert len(pool.who_has([out[0]])[out[0].key]) == 2
    del out
    gc.collect()
    wait_for_sync(lambda: released(workers), 10, "the copy outlived its chunk")


def test_delete_a_map_result(pool, workers):
    out = pool.map(inc, range(300), chunksize=100)
    first = out[0]
    pool.delete(out)
    assert not held(workers)
    assert first.status == "deleted" and out[299].status == "deleted"
    with pytest.raises(KeyError, match="was deleted"):
        pool.gather(out)


def test_small_maps_and_maps_over_handles_return_a_remote_list_too(pool):
    small = pool.map(inc, range(5))
    assert isinstance(small, RemoteList) and all(type(s) is RemoteData for s in small.spans)
    assert pool.gather(small) == [1, 2, 3, 4, 5]
    data = pool.scatter(list(range(200)))
    over = pool.map(inc, data)  # each element goes where its input is: no shared chunks
    assert isinstance(over, RemoteList) and pool.gather(over) == list(range(1, 201))
    assert pool.map(inc, []) == [] and len(pool.map(inc, [])) == 0


def boom(x):
    return 1 // (x - 3)


def pair(x, y):
    return (x, y)


def test_failed_deleted_or_pending_keyword_inputs_of_a_chunked_map(pool):
    failed = pool.map(boom, range(200), chunksize=50)[3]
    out = pool.map(pair, range(100), chunksize=10, y=failed)
    assert all(h.status == "error" for h in out)
    with pytest.raises(ZeroDivisionError):
        pool.gather(out)
    gone = pool.scatter([5])[0]
    pool.delete([gone])
    with pytest.raises(DistributedError, match="was deleted"):
        pool.gather(pool.map(pair, range(100), chunksize=10, y=gone))
    later = pool.submit(lambda: 7)  # still running, perhaps: the map waits for it
    assert pool.gather(pool.map(pair, range(100), chunksize=10, y=later))[:2] == [(0, 7), (1, 7)]


def test_a_failed_element_is_held_by_nobody(pool, workers):
    out = pool.map(boom, range(100), chunksize=10)
    assert pool.who_has([out[3]]) == {out[3].key: set()}
    with pytest.raises(MissingDataError, match="does not hold"):  # nor served, were it asked
        run_in_cluster_loop(pool.connection_pool(next(iter(out[3].workers))).get_data(
            keys=[out[3].key]))  # fmt: skip


def test_each_get_gives_a_fresh_value_and_a_pass_unpickles_each_chunk_once(pool, monkeypatch):
    from distributed3.client import results

    out = pool.map(lambda x: [x], range(2000), chunksize=1000)
    calls = []
    real = results.pickle.loads
    monkeypatch.setattr(results.pickle, "loads", lambda b: calls.append(1) or real(b))
    assert [h.get() for h in out] == [[x] for x in range(2000)]
    assert len(calls) == 2  # not 2000
    first = out[0].get()
    first.append("changed")
    assert out[0].get() == [0]


def test_deleting_a_map_result_deletes_its_copies_and_recomputed_elements(pool, workers):
    out = pool.map(inc, range(100), chunksize=50)
    pool.replicate([out[0]], n=2)
    pool.delete(out)
    del out
    gc.collect()
    wait_for_sync(lambda: released(workers), 10, "a copy of an element outlived delete")
    out = pool.map(lambda i: np.full(2_000, i, dtype="f8"), range(20), chunksize=10)
    alive = kill_holder(workers, out.spans[0])
    pool.gather(out)  # the lost elements computed again, one by one; their reports may lag
    assert any("#" in k for k in held(alive))
    pool.delete(out)
    wait_for_sync(lambda: released(alive), 10, "recomputed elements outlived delete")


def test_deleting_elements_frees_their_memory_for_good(pool, workers):
    out = pool.map(lambda i: np.full(2_000, i, dtype="f8"), range(20), chunksize=10)
    held(workers)
    before = sum(sum(w.nbytes.values()) for w in workers)
    pool.delete(out[:10])
    assert sum(sum(w.nbytes.values()) for w in workers) <= before / 2 + 1_000
    gc.collect()  # the deleted handles are gone: made again, they are still deleted
    assert out[0].status == "deleted" and out[10].status == "finished"
    assert pool.who_has([out[0]]) == {out[0].key: set()}
    with pytest.raises(KeyError, match="was deleted"):
        pool.gather(out)
    assert float(pool.gather(out[10:])[0][0]) == 10.0


def test_a_retiring_worker_hands_its_chunks_over(pool, workers):
    out = pool.map(lambda i: np.full(2_000, i, dtype="f8"), range(40), chunksize=10)
    victim, peer = workers
    run_in_cluster_loop(victim.close())  # hands what only it holds to its peer
    assert {type(v).__name__ for v in peer.data.values()} == {"Parts"}
    assert [float(v[0]) for v in pool.gather(out)] == [float(i) for i in range(40)]
    assert not any("#" in k for k in held([peer]))  # moved whole, nothing recomputed
    del out
    gc.collect()
    wait_for_sync(lambda: released([peer]), 10, "a handed-over chunk was not released")


def test_handles_made_in_several_threads_at_once_are_one_object(pool):
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            out = pool.map(inc, range(2000), chunksize=1000)
            barrier = threading.Barrier(4)
            got = [None] * 4

            def grab(t):
                barrier.wait()
                got[t] = [out[i] for i in range(2000)]

            threads = [threading.Thread(target=grab, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert all(len({id(g[i]) for g in got}) == 1 for i in range(2000))
    finally:
        sys.setswitchinterval(interval)


def test_copies_of_elements_are_released_when_their_client_vanishes():
    with cluster_in_thread(2, center_kwargs={"client_grace": 0.2}) as (center, workers):
        with Pool(center.address) as pool:
            out = pool.map(inc, range(100), chunksize=100)
            first = out[0]
            pool.replicate([first], n=2)
            wait_for_sync(lambda: len(center.get_who_has(None, [first.key])[first.key]) == 2
                          and out.spans[0].key in center.who_has, 10, "no copy")  # fmt: skip
            victim = next(w for w in workers if out.spans[0].key in w.data)  # the chunk's
            run_in_cluster_loop(victim.close(handoff=False))  # the chunk's only holder
            alive = [w for w in workers if w is not victim]
            assert first.key in held(alive)  # the copy, owned through its chunk
            run_in_cluster_loop(_vanish(pool))
            wait_for_sync(lambda: released(alive), 10, "the copy outlived its client")


async def _vanish(pool):
    pool.session.disconnect()  # gone, without a word to the center, for good


def test_replicating_a_map_result_copies_whole_chunks(pool, workers):
    out = pool.map(lambda i: np.full(2_000, i, dtype="f8"), range(40), chunksize=10)
    first = out[0]
    pool.replicate(out, n=2)
    chunks = {g.key for g in out.spans}
    assert all(set(w.data) == chunks for w in workers)  # no element copied on its own
    assert first.workers == {w.address for w in workers}
    done = sum(w.tasks_done for w in workers)
    run_in_cluster_loop(workers[0].close(handoff=False))
    assert [float(v[0]) for v in pool.gather(out)] == [float(i) for i in range(40)]
    assert workers[1].tasks_done + workers[0].tasks_done == done  # nothing computed again


def test_a_map_over_a_map_goes_chunk_for_chunk_where_the_chunks_are(pool, workers):
    a = pool.map(lambda i: np.full(100, i), range(300), chunksize=30)
    before = pool.worker_info()
    messages = sum(w.counters["compute_chunk"] for w in workers)
    b = pool.map(lambda x: float(x.sum()), a, chunksize=30)
    assert sum(w.counters["compute_chunk"] for w in workers) - messages == 10
    assert [s.size for s in b.spans] == [30] * 10
    assert pool.gather(b) == [100.0 * i for i in range(300)]
    after = pool.worker_info()
    assert all(i["peer_bytes_in"] == before[w]["peer_bytes_in"] for w, i in after.items())
    assert all(x.workers == y.workers for x, y in zip(a, b))
    c = pool.map(lambda x, k: float(x[0]) + k, a, k=pool.scatter([0.5])[0], chunksize=20)
    assert [s.size for s in c.spans] == [20, 10] * 10  # its own chunks, within a's
    assert pool.gather(c) == [i + 0.5 for i in range(300)]
    seeded = pool.gather(pool.map(lambda x: random.random(), a, seed=7))
    one_by_one = pool.gather(pool.map(lambda x: random.random(), list(a), seed=7))
    assert seeded == one_by_one  # the same seeds, element by element


def test_a_map_over_a_lost_chunk_computes_its_elements_again(pool, workers):
    a = pool.map(lambda i: np.full(1_000, i, dtype="f8"), range(40), chunksize=10)
    kill_holder(workers, a.spans[0])
    b = pool.map(lambda x: float(x[0]), a)
    assert pool.gather(b) == [float(i) for i in range(40)]


def test_a_map_over_results_with_a_failed_element_fails_that_element_only(pool):
    a = pool.map(boom, range(100), chunksize=10)
    b = pool.map(lambda x: x * 2, a)
    assert b[3].status == "error" and b[4].status == "finished"
    with pytest.raises(ZeroDivisionError):
        b[3].get()
    assert b[0].get() == -2


def work(x, delay=0.0):
    time.sleep(delay)
    return x


def test_a_slow_map_over_results_of_a_fast_one_runs_on_every_worker(pool, workers):
    """The fast map's results may sit in one chunk on one worker: the slow map over
    them still goes in tasks of its own size, and an idle worker takes some (their
    inputs are tiny); a time limit still applies to each task."""
    pool.map(inc, range(5000))  # the pool learns that inc is fast
    a = pool.map(inc, range(16))
    assert len(a.spans) == 1  # one chunk, on one worker
    before = {w.address: w.tasks_done for w in workers}
    b = pool.map(work, a, delay=0.05, timeout=2)
    assert pool.gather(b) == list(range(1, 17))
    assert len(b.spans) == 16
    assert all(w.tasks_done - before[w.address] >= 4 for w in workers)
    pool.map(work, range(5000))  # fast without its keywords...
    c = pool.map(work, range(20), delay=0.05)  # ...which make it slow: not known to be fast
    assert len(c.spans) == 20


def test_tasks_needing_resources_go_to_a_worker_that_has_them_not_to_their_inputs():
    from distributed3 import Worker

    with cluster_in_thread(1) as (center, _):
        with Pool(center.address, timeout=5) as pool:
            a = pool.map(inc, range(20), chunksize=10)  # on the one worker, without a GPU
            gpu = Worker(center.address, ncores=1, resources={"GPU": 1})
            run_in_cluster_loop(gpu.start(port=0))
            try:
                wait_for_sync(lambda: len(pool.worker_resources) == 2, 5, "no GPU worker")
                for source in (a, list(a)):  # chunk for chunk, and element by element
                    b = pool.map(inc, source, resources={"GPU": 1})
                    assert pool.gather(b) == list(range(2, 22))
                    assert all(h.workers == {gpu.address} for h in b)
            finally:
                run_in_cluster_loop(gpu.close())


def test_deleting_every_element_one_by_one_releases_the_chunk(pool, workers):
    out = pool.map(inc, range(20), chunksize=10)
    first, second = out.spans
    pool.delete(out[:5])
    assert first.key in held(workers) and first.status == "finished"
    pool.delete(out[5:10])  # the rest of the first chunk: it goes whole
    assert first.status == "deleted" and first.key not in held(workers)
    assert second.key in held(workers)
    assert pool.gather(out[10:]) == list(range(11, 21))
    with pytest.raises(KeyError, match="was deleted"):
        pool.gather(out[:10])


def test_a_map_over_one_sequence_passes_each_element_as_the_one_argument(pool, workers):
    pairs = [(i, -i) for i in range(60)]  # tuples: one argument each, not spread
    out = pool.map(lambda p: p[0] + 2 * p[1], pairs, chunksize=20)
    assert [type(s) for s in out.spans] == [ResultGroup] * 3
    assert pool.gather(out) == [-i for i in range(60)]
    assert out.spans[0].recipe.element(5).args == ((5, -5),)  # for computing it again
    arrays = pool.map(np.sum, [np.arange(i) for i in range(40)], chunksize=10, axis=0)
    assert pool.gather(arrays) == [sum(range(i)) for i in range(40)]
    failing = pool.map(lambda x: 1 // x, [0, 1, None, 2], chunksize=4)
    assert [h.status for h in failing] == ["error", "finished", "error", "finished"]
    # seeded, and lost with its worker: computed again element by element, the same
    draws = pool.map(lambda x: np.full(600, x + random.random()), range(40), chunksize=10,
                     seed=3)  # fmt: skip
    assert all(g.pickled is None for g in draws.spans)  # too big to come with the reply
    before = [float(a[0]) for a in pool.gather(draws)]
    alive = kill_holder(workers, draws.spans[0])
    assert [float(a[0]) for a in pool.gather(draws)] == before
    assert any("#" in k for k in held(alive))  # computed again


def test_deleting_halves_of_a_chunk_at_once_releases_it(pool, workers):
    out = pool.map(inc, range(20), chunksize=10)
    first = out.spans[0]

    async def both():  # from another loop: both run on the pool's loop at once
        await asyncio.gather(pool.adelete(out[:5]), pool.adelete(out[5:10]))

    asyncio.run(both())
    assert first.status == "deleted" and first.key not in held(workers)


def test_a_result_over_the_inline_size_stays_on_the_worker(pool):
    for big in (10**20000, (10**20000,)):  # ints have no bound: by type alone, they look small
        out = pool.map(lambda i: big if i == 9 else (i, 0), range(10), chunksize=10)
        assert out.spans[0].pickled is None  # over INLINE_BYTES: not sent with the reply
        assert pool.gather(out)[9] == big
