"""``imap``, ``imap_unordered``, ``aimap``: values as their tasks finish, released once yielded."""
import asyncio
import gc

import numpy as np
import pytest

from distributed3.testing import gated
from distributed3.utils import wait_for_sync


def test_imap_unordered_yields_while_others_still_run(pool4, gate):
    try:
        it = pool4.imap_unordered(gated, range(5))
        first_four = sorted(next(it) for _ in range(4))  # task 0 is still blocked
        assert first_four == [10, 20, 30, 40]
        gate.set()
        assert next(it) == 0
        with pytest.raises(StopIteration):
            next(it)
    finally:
        gate.set()


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
    wait_for_sync(lambda: not any(w.data for w in workers), 10, "imap left results behind")


def test_a_streams_small_results_are_not_kept_nor_told_to_the_center(pool, center, workers):
    """Its values are all a stream wants: those that came with the replies were never
    kept on the workers, so no report of them reaches the center, and no release."""
    before = dict(center.counters)
    held = [set(w.data) for w in workers]
    assert list(pool.imap(abs, range(-2000, 0))) == list(range(2000, 0, -1))
    assert sorted(pool.imap_unordered(abs, range(-500, 0))) == list(range(1, 501))
    # a reply leaves from its task thread before the worker's loop counts the task
    wait_for_sync(lambda: sum(w.tasks_done for w in workers) >= 2500, 10,
                  "the workers to count the tasks they ran")  # fmt: skip
    wait_for_sync(lambda: not any(w._pending_add or w._pending_remove for w in workers), 10,
                  "the workers' reports to go out")  # fmt: skip
    assert [set(w.data) for w in workers] == held
    for op in ("add_keys", "remove_keys", "release_keys"):
        assert center.counters[op] == before.get(op, 0), op
    gc.collect()  # nor does the pool hold them as its own (a resubscription names those)
    assert not pool.session._owned


def test_aimap_from_the_callers_own_loop(pool):
    async def main():  # the caller's loop, as in Jupyter: not the pool's
        ordered = [v async for v in pool.aimap(lambda x, y: x - y, range(5), range(5, 10))]
        unordered = [v async for v in pool.aimap(abs, range(-4, 0), ordered=False)]
        seen = []
        with pytest.raises(ZeroDivisionError):
            async for v in pool.aimap(lambda x: 10 // x, [1, 2, 0, 5]):
                seen.append(v)
        return ordered, unordered, seen

    ordered, unordered, seen = asyncio.run(main())
    assert ordered == [-5] * 5
    assert sorted(unordered) == [1, 2, 3, 4]
    assert seen == [10, 5]  # the values before the failed one, then its error


def test_imap_reads_its_input_as_it_goes(pool):
    """An endless generator starts at once; what it has been asked for stays within a
    window of the values taken; seeds are those of ``map``."""
    import itertools
    import random

    consumed = []

    def endless():
        for i in itertools.count():
            consumed.append(i)
            yield i

    it = pool.imap(lambda x: x * 3, endless())
    assert [next(it) for _ in range(10)] == [x * 3 for x in range(10)]
    # a window ahead at most, not the whole input: twice the tasks the workers may have
    # in flight, once the replies show the tasks are tiny (see Batch.slots_per_core)
    assert len(consumed) <= 10 + 2 * 64 * sum(pool.available_cores.values())
    it.close()
    assert list(itertools.islice(pool.imap_unordered(abs, itertools.count()), 5)) != []
    draw = lambda x: (x, random.random())  # noqa: E731
    assert list(pool.imap(draw, range(70), seed=3)) == pool.gather(pool.map(draw, range(70),
                                                                             seed=3))  # fmt: skip
    assert sorted(pool.imap_unordered(lambda x: -x, range(500))) == sorted(-x for x in range(500))


@pytest.mark.timeout(90)
def test_a_script_that_leaves_an_imap_open_exits():
    """A script that ends with an imap half read (its generator finalized as Python
    exits, after the pool closed) exits at once rather than waiting forever for a loop
    that no thread runs any more."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        from distributed3 import Pool
        pool = Pool(n_workers=1)
        it = pool.imap(abs, range(1000))
        print(next(it), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


@pytest.mark.parametrize("ordered", [True, False])
def test_a_task_past_its_timeout_ends_the_stream_with_its_error(pool, gate, ordered):
    """The timed-out task's own error, at once: the stream used to wait for good for a
    task whose handle it had let go of (the batch failed it without a word)."""
    import time

    items = [1, 2, 3, 0, 4, 5, 6]  # gated(0) waits for the gate, past the timeout
    stream = pool.imap if ordered else pool.imap_unordered
    start = time.monotonic()
    got = []
    with pytest.raises(TimeoutError, match=r"task 3 of gated .* did not finish within 0.5 s"):
        for value in stream(gated, items, timeout=0.5):
            got.append(value)
    assert time.monotonic() - start < 10
    if ordered:
        assert got == [10, 20, 30]
