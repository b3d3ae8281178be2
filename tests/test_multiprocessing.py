"""``distributed3.multiprocessing.Pool`` against ``multiprocessing.Pool``, on the same calls."""
import multiprocessing

import pytest

from distributed3 import multiprocessing as dmp
from distributed3.testing import held


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def scaled(x, factor=1):
    return x * factor


INIT = []  # set in each worker by the initializer


def remember(value):
    INIT.append(value)


def initialized(_):
    return list(INIT)


def both(pool):
    """What each pool answers to the same calls, in a dict."""
    got = {}
    got["map"] = pool.map(square, range(20), 3)
    got["map default chunks"] = pool.map(square, range(5))
    got["starmap"] = pool.starmap(pow, [(2, 3), (3, 2), (5, 0)])
    got["starmap varied"] = pool.starmap(max, [(1, 2), (3, 4, 5)])
    got["apply"] = pool.apply(scaled, (4,), {"factor": 3})
    done = []
    result = pool.apply_async(square, (7,), callback=done.append)
    got["apply_async"] = result.get(30)
    got["successful"] = result.successful()
    got["map_async"] = pool.map_async(square, [1, 2, 3]).get(30)
    got["starmap_async"] = pool.starmap_async(pow, [(2, 2)]).get(30)
    got["imap"] = list(pool.imap(square, iter(range(6)), 2))
    got["imap_unordered"] = sorted(pool.imap_unordered(square, range(6)))
    values, it = [], pool.imap(fail_on_three, range(6))
    while True:  # an error in its place, and the values after it (not a generator's end)
        try:
            values.append(next(it))
        except StopIteration:
            break
        except ValueError as e:
            values.append(str(e))
    got["imap past an error"] = values
    errors = []
    bad = pool.map_async(fail_on_three, range(5), error_callback=errors.append)
    bad.wait(30)
    got["failed"] = (bad.ready(), bad.successful(), [type(e).__name__ for e in errors])
    with pytest.raises(ValueError, match="three"):
        bad.get()
    with pytest.raises(ValueError, match="three"):
        pool.map(fail_on_three, range(5))
    got["callback"] = done
    return got


@pytest.mark.timeout(60)
def test_same_answers_as_multiprocessing():
    with multiprocessing.get_context("fork").Pool(2) as theirs:
        expected = both(theirs)
    with dmp.Pool(2) as ours:
        assert both(ours) == expected


def test_initializer_runs_once_in_each_worker(center):
    INIT.clear()
    address = "%s:%d" % center.address
    with dmp.Pool(initializer=remember, initargs=("ready",), address=address) as p:
        seen = p.map(initialized, range(10), 1)
    assert all(s and set(s) == {"ready"} for s in seen), seen
    assert max(map(len, seen)) == 1  # in-process workers share one module: once in all


def test_get_timeout_close_join_terminate(center, gate):
    p = dmp.Pool(address="%s:%d" % center.address)
    slow = p.apply_async(held, (5,))
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(timeout=0.05)
    with pytest.raises(ValueError, match="not ready"):
        slow.successful()
    with pytest.raises(ValueError, match="still running"):
        p.join()
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    gate.set()
    p.join()  # waits for the task given
    assert slow.get(1) == 5
    with pytest.raises(ValueError, match="maxtasksperchild"):
        dmp.Pool(1, maxtasksperchild=10)


def test_finished_results_are_not_kept_by_the_pool(center):
    """Only the caller holds a result it got: a long-lived pool kept every one until
    join() (2 MB results grew the client by 2 MB a call)."""
    import gc
    import weakref

    import numpy as np

    with dmp.Pool(address="%s:%d" % center.address) as p:
        value = p.apply(np.ones, (1000,))
        gone = weakref.ref(value)
        del value
        gc.collect()
        assert gone() is None
        assert not p._results


def test_an_imap_read_after_join_says_why(center):
    """Ours reads its input as it goes (the standard library's takes it all at once):
    values not read before join() are gone, and the error says so."""
    p = dmp.Pool(address="%s:%d" % center.address)
    it = p.imap(square, range(5))
    p.close()
    p.join()
    with pytest.raises(ValueError, match="read the values before close"):
        list(it)
