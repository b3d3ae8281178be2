"""``submit``, ``as_completed`` and ``wait``: handles used as ``concurrent.futures`` futures."""

import pytest

from distributed3 import FIRST_COMPLETED, as_completed, wait
from distributed3.testing import gated

def test_submit_as_completed_and_wait(pool4, gate):
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
        gate.set()
        done, not_done = wait(futures, return_when=FIRST_COMPLETED)
        assert done and futures[0].result(timeout=5) == 0
    finally:
        gate.set()
    failing = pool4.submit(lambda: 1 / 0)
    (f,) = list(as_completed([failing]))
    with pytest.raises(ZeroDivisionError):
        f.result()
    downstream = pool4.submit(lambda a, b: a + b, pool4.submit(pow, 2, 3), 1)
    assert downstream.result() == 9  # a pending input is waited for
