"""``RemoteData``: what a handle holds, what ``get`` costs, and when its key goes."""


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
