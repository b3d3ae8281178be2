"""A ``concurrent.futures.Executor`` on the cluster: the standard library's futures.

::

    ex.submit(f, x) -> concurrent.futures.Future, PENDING in the executor's queue
      |  at most two tasks per core of the cluster out at once: the rest wait here,
      |  where cancel() and shutdown(cancel_futures=True) can still take them back
      '-> RUNNING: sent to a worker (inbox.Inbox); its value, or its exception with
          the remote traceback as its cause, set on the future; the handle released

So ``concurrent.futures.wait``, ``as_completed``, ``add_done_callback``, ``Executor.map``
and ``with`` blocks work as with a ``ProcessPoolExecutor``.

>>> import concurrent.futures as cf
>>> with pool.executor() as ex:
...     futures = [ex.submit(pow, 2, n) for n in range(4)]
...     sorted(f.result() for f in cf.as_completed(futures))
[1, 2, 4, 8]
"""
import asyncio
import concurrent.futures as cf
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .inbox import inbox

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["Executor"]

PER_CORE = 2  # tasks out per core of the cluster; the rest wait, cancellable, here
P = ParamSpec("P")
T = TypeVar("T")


class Executor(cf.Executor):
    """``concurrent.futures.Executor`` whose calls run on a distributed3 cluster.

    ``Executor(max_workers=4)`` starts a local cluster of that many one-core workers
    (``None``: one per core) and stops it on ``shutdown``; ``Executor(address=...)``
    connects to a running center; ``pool.executor()`` uses that pool, left open.

    >>> with Executor(max_workers=1) as ex:
    ...     list(ex.map(abs, [-1, -2]))
    [1, 2]
    """

    def __init__(self, max_workers: int | None = None, *, address: str | None = None,
                 pool: "Pool | None" = None, **pool_kwargs: Any) -> None:  # fmt: skip
        self._own = pool is None
        if pool is None:
            from .pool import Pool

            if address is None:
                pool = Pool(n_workers=max_workers, **pool_kwargs)
            else:
                pool = Pool(address, **pool_kwargs)
        self.pool = pool
        self._session = pool.session
        self._queue: deque = deque()  # (future, fn, args, kwargs) not sent yet
        self._out = 0  # sent, not finished
        self._limit = (None, 0)  # ((the membership it was computed for), futures in flight at most)
        self._futures: set[cf.Future] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> cf.Future[T]:
        """Schedule ``fn(*args, **kwargs)``; a ``concurrent.futures.Future`` of its value."""
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        future: cf.Future[T] = cf.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(future)
        future.add_done_callback(self._forget)
        self._session.loop.call_soon_threadsafe(self._enqueue, (future, fn, args, kwargs))
        return future

    def _forget(self, future):
        with self._lock:
            self._futures.discard(future)

    # -- on the pool's loop ------------------------------------------------------------

    def _enqueue(self, item):
        self._queue.append(item)
        self._fill()

    def _fill(self):
        cores = self._session.cores
        if self._limit[0] != (id(cores), len(cores)):  # summed as workers come and go only
            self._limit = ((id(cores), len(cores)), PER_CORE * max(sum(cores.values()), 1))
        limit = self._limit[1]
        while self._queue and self._out < limit:
            future, fn, args, kwargs = self._queue.popleft()
            if future.set_running_or_notify_cancel():  # False: it was cancelled meanwhile
                self._out += 1
                asyncio.ensure_future(self._run(future, fn, args, kwargs))

    async def _run(self, future, fn, args, kwargs):
        try:
            handle = inbox(self._session).put(fn, args, kwargs)
            value = (await self._session.gather([handle]))[0]
        except BaseException as e:  # the task's own error, or why it could not run
            future.set_exception(e)
        else:
            future.set_result(value)
        finally:
            self._out -= 1
            self._fill()

    # -- shutting down -----------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with ``cancel_futures`` the queued ones are cancelled; with
        ``wait``, returns once the rest are done.  An executor that started its own
        cluster stops it (after waiting, if asked to)."""
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()  # only those still queued here: the rest run to their end
        if wait:
            cf.wait(futures)
        if self._own and (wait or not futures):
            self.pool.close()
