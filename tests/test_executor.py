"""The ``concurrent.futures.Executor``: the standard library's own functions on its futures."""
import concurrent.futures as cf
import threading

import pytest

from distributed3 import Executor, Pool
from distributed3.testing import held
from distributed3.utils import wait_for_sync


def test_stdlib_wait_and_as_completed_and_callbacks(pool):
    ex = pool.executor()
    futures = [ex.submit(pow, 2, n) for n in range(6)]
    assert all(isinstance(f, cf.Future) for f in futures)
    done, not_done = cf.wait(futures, timeout=30)
    assert len(done) == 6 and not not_done
    assert sorted(f.result() for f in cf.as_completed(futures)) == [1, 2, 4, 8, 16, 32]
    called = threading.Event()
    seen = []
    f = ex.submit(abs, -7)
    f.add_done_callback(lambda fut: (seen.append(fut.result()), called.set()))
    assert called.wait(30) and seen == [7]
    ex.shutdown()
    assert pool.apply(abs, (-1,)).get() == 1  # the pool is left open


def test_errors_keep_their_type_and_remote_traceback(pool):
    with pool.executor() as ex:
        f = ex.submit(lambda: {}["missing"])
        with pytest.raises(KeyError) as info:
            f.result(30)
        assert "missing" in str(info.value.__cause__)
        assert isinstance(f.exception(), KeyError)
        with pytest.raises(TypeError, match="is not callable"):
            ex.submit(3)


def test_queued_futures_can_be_cancelled(pool, gate):
    """Two workers of one core: four held tasks fill the cluster, the fifth waits here."""
    ex = pool.executor()
    busy = [ex.submit(held, i) for i in range(4)]
    waiting = ex.submit(held, 99)
    wait_for_sync(lambda: all(f.running() for f in busy), 10, "the held tasks to be sent")
    assert not waiting.running() and not busy[0].cancel()
    assert waiting.cancel() and waiting.cancelled()
    with pytest.raises(cf.CancelledError):
        waiting.result()
    gate.set()
    assert [f.result(30) for f in busy] == [0, 1, 2, 3]
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)


def test_shutdown_cancels_what_is_queued(pool, gate):
    ex = pool.executor()
    busy = [ex.submit(held, i) for i in range(4)]
    queued = [ex.submit(held, i) for i in range(10, 14)]
    wait_for_sync(lambda: all(f.running() for f in busy), 10, "the held tasks to be sent")
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert [f.result(30) for f in busy] == [0, 1, 2, 3]


def test_map_with_timeout_and_own_local_cluster():
    with Executor(max_workers=2) as ex:
        assert list(ex.map(pow, [2, 3], [3, 2], timeout=30)) == [8, 9]
        pool = ex.pool
    assert pool.status == "closed"  # the executor started it, and stopped it


def test_executor_on_a_center_address(center):
    host, port = center.address
    with Executor(address=f"tcp://{host}:{port}") as ex:
        assert ex.submit(sum, [1, 2]).result(30) == 3
    with Pool(center.address) as pool:
        assert pool.nworkers == 2  # the executor's pool was its own; the cluster stays
