"""Submits queued by the caller and made into tasks on the loop (client/inbox.py)."""
import operator
import threading

import numpy as np
import pytest

from distributed3 import Pool
from distributed3.client.inbox import inbox
from distributed3.exceptions import CommClosedError
from distributed3.testing import GATE, held
from distributed3.utils import wait_for_sync


def test_a_submit_on_an_unfinished_input_returns_at_once(pool, gate):
    """A submit whose input is still running returns its handle at once, and holds up
    neither the caller nor the submits after it; it runs once the input is done."""
    first = pool.submit(held, 3)  # runs until the gate opens
    second = pool.submit(operator.add, first, 1)
    assert not first.done() and not second.done()
    assert pool.submit(abs, -5).result(timeout=10) == 5  # the other worker, meanwhile
    assert not second.done()
    gate.set()
    assert second.result(timeout=10) == 4


def _fails_once_let(x):
    assert GATE.wait(30), "the test never opened the gate"
    raise ValueError(f"bad {x}")


def test_a_submit_on_an_input_that_fails_later_fails_with_its_error(pool, gate):
    """A submit that waited for its input fails as the input did, not as lost data."""
    first = pool.submit(_fails_once_let, 1)
    second = pool.submit(operator.add, first, 1)
    gate.set()
    with pytest.raises(ValueError, match="bad 1"):
        second.result(timeout=10)


def test_an_apply_on_an_input_that_fails_later_fails_with_its_error(pool, gate):
    """So does an ``apply`` (and a map) that waited for its input."""
    first = pool.submit(_fails_once_let, 2)
    opener = threading.Timer(0.1, gate.set)  # while apply waits for the input, or before
    opener.start()
    result = pool.apply(operator.add, [first, 1])
    opener.join()
    with pytest.raises(ValueError, match="bad 2"):
        result.get()


def test_a_submit_waiting_for_its_input_fails_when_the_pool_closes(center, gate):
    """A submit still waiting for its input when the pool closes fails, saying so;
    it does not stay pending."""
    pool = Pool(center.address)
    first = pool.submit(held, 3)
    second = pool.submit(operator.add, first, 1)
    pool.close()
    gate.set()
    wait_for_sync(second.done, 10, "the waiting submit stayed pending")
    with pytest.raises(CommClosedError, match="closed before the task ended"):
        second.raise_error()


def test_a_submit_with_a_big_keyword_is_broadcast_and_others_go_on(pool, gate):
    """A keyword argument big enough to be broadcast first is, without holding up the
    submits after it; a big one beside an unfinished input waits for both."""
    table = np.arange(50_000)  # 400 kB pickled: broadcast once, sent by key
    blocked = pool.submit(held, 2)
    looked_up = pool.submit(lambda i, table: int(table[i]), 7, table=table)
    after = pool.submit(lambda i, table: int(table[i]), blocked, table=table)
    assert pool.submit(abs, -1).result(timeout=10) == 1
    assert looked_up.result(timeout=10) == 7
    assert not after.done()
    gate.set()
    assert after.result(timeout=10) == 2


def test_submits_go_out_when_the_caller_stops_calling(pool):
    """What a loop of submits left queued runs although the caller never calls into the
    pool again: the loop's thread takes it up."""
    handles = [pool.submit(abs, -i) for i in range(50)]
    wait_for_sync(lambda: all(h.done() for h in handles), 10,
                  "the submits left queued never ran")  # fmt: skip
    assert pool.gather(handles) == list(range(50))


def test_submits_from_several_threads_all_run(pool):
    """Callers in several threads submit at once: every task runs, once, with its own
    arguments."""
    results = {}

    def caller(t):
        handles = [pool.submit(operator.mul, t, i) for i in range(150)]
        results[t] = pool.gather(handles)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {t: [t * i for i in range(150)] for t in range(4)}


def test_a_submit_queued_when_the_pool_closes_fails_and_says_so(center):
    """Calls still queued when the pool closes fail with the reason; none stays
    pending."""
    pool = Pool(center.address)
    box = inbox(pool.session)
    handles = [box.put(abs, (-i,), {}) for i in range(20)]  # queued, not sent yet
    pool.close()
    wait_for_sync(lambda: all(h.done() for h in handles), 10,
                  "a submit queued at close stayed pending")  # fmt: skip
    for h in handles:
        if h.status == "error":
            with pytest.raises(CommClosedError, match="closed"):
                h.raise_error()
    with pytest.raises(CommClosedError, match="not running"):
        pool.submit(abs, -1)


def test_a_submit_of_a_function_that_cannot_be_sent_raises_at_once(pool):
    """The function is pickled in the caller: its error comes from ``submit`` itself."""
    lock = threading.Lock()
    with pytest.raises(Exception, match="could not serialize function"):
        pool.submit(lambda: lock)
    with pytest.raises(TypeError, match="is not callable"):
        pool.submit(42)
    assert pool.submit(abs, -2).result(timeout=10) == 2
