"""``RemoteData``: what a handle holds, what ``get`` costs, and when its key goes."""
import gc
import pickle

import numpy as np
import pytest

from distributed3.utils import wait_for_sync


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


def test_a_handle_is_not_pickled_but_its_key_travels_in_tasks(pool):
    (x,) = pool.scatter([21])
    with pytest.raises(TypeError, match="cannot be pickled: pass it to pool.map/apply"):
        pickle.dumps({"nested": [x]})
    assert pool.apply(lambda d: d["nested"][0] * 2, ({"nested": [x]},)).get() == 42


def test_a_handle_reports_its_state_and_answers_as_a_future(pool):
    ok, failed = pool.map(lambda x: 1 // x, [1, 0])
    assert ok.done() and failed.done()
    assert (ok.status, failed.status) == ("finished", "error")
    assert ok.result() == ok.get() == 1
    assert isinstance(failed.exception, ZeroDivisionError)
    pool.delete([ok])
    assert ok.status == "deleted" and "status=deleted" in repr(ok)


def test_dropping_the_last_handle_releases_its_key_and_the_inputs_it_kept(pool, workers):
    big = pool.apply(lambda: np.ones(10_000))
    derived = pool.apply(len, [big])  # keeps big, to compute itself again if it is lost
    assert derived.get() == 10_000
    keys = {big.key, derived.key}
    wait_for_sync(lambda: keys <= {k for w in workers for k in w.data}, 5, "results missing")
    del big, derived
    gc.collect()
    wait_for_sync(lambda: not keys & {k for w in workers for k in w.data}, 10, "a key was kept")
