"""``submit``, ``as_completed`` and ``wait``: handles used as ``concurrent.futures`` futures."""
import threading

import pytest

from distributed3 import FIRST_COMPLETED, as_completed, wait

# in-process workers share this module: a task can block on it until the test lets go
GATE = threading.Event()


def gated(x):
    if x == 0:
        assert GATE.wait(10), "the test never opened the gate"
    return x * 10


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
