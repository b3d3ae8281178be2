"""``multiprocessing.Pool``'s interface on a distributed3 cluster: a drop-in.

::

    from distributed3.multiprocessing import Pool     # was: from multiprocessing import Pool
    with Pool(4) as p:                                # 4 local worker processes
        p.map(f, xs, chunksize=10); p.starmap(g, pairs); p.apply_async(h, (1,)).get()
    Pool(address="10.0.0.5:8787")                     # or the workers of a running center

The calls take ``multiprocessing``'s arguments and give its answers (lists, values,
``AsyncResult``, iterators; ``multiprocessing.TimeoutError`` from ``get``), so code
written for it runs unchanged; :class:`distributed3.Pool` keeps its own interface
(``map(func, *iterables)`` returning handles to data left on the workers).

>>> with Pool(2) as p:
...     p.map(abs, [-1, -2, -3], 2), p.starmap(pow, [(2, 3), (3, 2)]), p.apply(max, (4, 9))
([1, 2, 3], [8, 9], 9)
"""
import asyncio
import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Self, TypeVar

from .client.options import Options
from .client.pool import Pool as _Pool
from .client.streams import outcomes, stream, unwrap
from .exceptions import CommClosedError

__all__ = ["Pool", "AsyncResult"]

_initialized: set[str] = set()  # tokens of the initializers this process has run
T = TypeVar("T")


class _Call:
    """``func`` as a task runs it: its arguments spread (``star``), after the pool's
    ``initializer`` has run once in this worker process."""

    def __init__(self, func, star=False, init=None):
        self.func = func
        self.star = star
        self.init = init  # (token, initializer, initargs) or None

    def __call__(self, args, **kwargs):
        if self.init is not None and self.init[0] not in _initialized:
            self.init[1](*self.init[2])
            _initialized.add(self.init[0])
        return self.func(*args, **kwargs) if self.star else self.func(args, **kwargs)


class AsyncResult(Generic[T]):
    """What ``apply_async`` and ``map_async`` return: ``get(timeout)``, ``wait``,
    ``ready``, ``successful``, as ``multiprocessing.pool.AsyncResult``."""

    def __init__(self, future: cf.Future[T], callback: Callable[[T], object] | None = None,
                 error_callback: Callable[[BaseException], object] | None = None) -> None:
        self._future = future
        if callback is not None or error_callback is not None:
            def done(f):
                if f.exception() is None:
                    if callback is not None:
                        callback(f.result())
                elif error_callback is not None:
                    error_callback(f.exception())

            future.add_done_callback(done)

    def ready(self) -> bool:
        """Whether the call has ended."""
        return self._future.done()

    def successful(self) -> bool:
        """Whether it ended without an exception (``ValueError`` while it runs)."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._future.exception() is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until it ends, or for ``timeout`` seconds."""
        try:
            self._future.exception(timeout)
        except TimeoutError:
            pass

    def get(self, timeout: float | None = None) -> T:
        """Its value, or its exception raised; ``multiprocessing.TimeoutError`` after
        ``timeout`` seconds."""
        try:
            return self._future.result(timeout)
        except TimeoutError:
            if self._future.done():  # the task itself raised TimeoutError
                raise
            raise multiprocessing.TimeoutError(f"no result within {timeout} s") from None


class _Values(Iterator[T]):
    """What ``imap`` returns: a task's error is raised in its place and the iteration
    goes on after it, as the standard library's does (a generator would end there)."""

    def __init__(self, outcomes, running):
        self._outcomes = outcomes
        self._running = running  # whether its pool still runs

    def __next__(self) -> T:
        try:
            outcome = next(self._outcomes)
        except CommClosedError:
            if self._running():
                raise
            raise ValueError("Pool not running: its imap reads its input as it goes, so "
                             "read the values before close() and join()") from None
        return unwrap(outcome)


class Pool:
    """``multiprocessing.Pool(processes, initializer, initargs)`` on a distributed3
    cluster: ``processes`` local one-core workers (``None``: one per core), or, with
    ``address``, the workers of a running center.  ``maxtasksperchild`` is refused:
    workers are long-lived here (``dworker --max-tasks`` retires one after that many).
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 maxtasksperchild: int | None = None, *, address: str | None = None,
                 **pool_kwargs: Any) -> None:  # fmt: skip
        if maxtasksperchild is not None:
            raise ValueError("maxtasksperchild is not supported: distributed3's workers are "
                             "long-lived (dworker --max-tasks N retires one after N tasks)")
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if address is None:
            self._pool = _Pool(n_workers=processes, **pool_kwargs)
        else:
            self._pool = _Pool(address, **pool_kwargs)
        self._init: tuple[str, Callable[..., object], tuple] | None = None
        if initializer is not None:
            self._init = (f"{os.getpid()}-{id(self)}-{self._pool.id}", initializer,
                          tuple(initargs))  # fmt: skip
        self._state = "running"
        self._results: set[cf.Future] = set()  # those not ended yet, for join()

    def _call(self, func, star=False):
        if self._state != "running":
            raise ValueError("Pool not running")
        return _Call(func, star, self._init)

    def _async(self, coro, callback, error_callback):
        loop = self._pool.session.loop
        assert loop is not None  # a sync pool has started
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        result = AsyncResult(future, callback, error_callback)
        self._results.add(future)
        future.add_done_callback(self._results.discard)  # the caller holds what it needs
        return result

    async def _values(self, call, iterable, chunksize):
        session = self._pool.session
        return await session.gather(await self._pool.amap(call, list(iterable),
                                                          chunksize=chunksize))  # fmt: skip

    # -- the calls ---------------------------------------------------------------------

    def apply(self, func: Callable[..., T], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> T:  # fmt: skip
        """``func(*args, **kwds)``'s value."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., T], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {}, callback: Callable[[T], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None,
                    ) -> AsyncResult[T]:  # fmt: skip
        """An :class:`AsyncResult` of ``func(*args, **kwds)``."""
        call = self._call(func, star=True)

        async def run():
            handle = await self._pool.aapply(call, (tuple(args),), dict(kwds))
            return (await self._pool.session.gather([handle]))[0]

        return self._async(run(), callback, error_callback)

    def map(self, func: Callable[[Any], T], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[T]:  # fmt: skip
        """``[func(x) for x in iterable]``, computed on the workers."""
        call = self._call(func)
        return self._pool.session.sync(self._values(call, iterable, chunksize))

    def map_async(self, func: Callable[[Any], T], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callable[[list[T]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None,
                  ) -> AsyncResult[list[T]]:  # fmt: skip
        """An :class:`AsyncResult` of :meth:`map`'s list."""
        call = self._call(func)
        return self._async(self._values(call, iterable, chunksize), callback, error_callback)

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[T]:  # fmt: skip
        """``[func(*args) for args in iterable]``."""
        call = self._call(func, star=True)
        return self._pool.session.sync(self._values(call, iterable, chunksize))

    def starmap_async(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[T]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None,
                      ) -> AsyncResult[list[T]]:  # fmt: skip
        """An :class:`AsyncResult` of :meth:`starmap`'s list."""
        call = self._call(func, star=True)
        return self._async(self._values(call, iterable, chunksize), callback, error_callback)

    def imap(self, func: Callable[[Any], T], iterable: Iterable[Any],
             chunksize: int = 1) -> Iterator[T]:  # fmt: skip
        """The values in order, as they come; the input is read as it goes (read the
        values before ``join()``).  A task's error is raised in its place, and the
        iteration goes on after it."""
        return self._stream(func, iterable, chunksize, True)

    def imap_unordered(self, func: Callable[[Any], T], iterable: Iterable[Any],
                       chunksize: int = 1) -> Iterator[T]:  # fmt: skip
        """The values as tasks finish."""
        return self._stream(func, iterable, chunksize, False)

    def _stream(self, func, iterable, chunksize, ordered):
        session = self._pool.session
        agen = stream(session, self._call(func), zip(iterable), {}, ordered=ordered,
                      options=Options(chunksize=chunksize))  # fmt: skip
        return _Values(outcomes(session, agen), lambda: self._state == "running")

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Take no more tasks; those given finish."""
        if self._state == "running":
            self._state = "closed"

    def join(self) -> None:
        """Wait for the tasks given, after :meth:`close` or :meth:`terminate`."""
        if self._state == "running":
            raise ValueError("Pool is still running")
        for future in list(self._results):
            try:
                future.exception()
            except BaseException:  # cancelled: terminate() stopped it
                pass
        if self._state == "closed":
            self._pool.close()
            self._state = "terminated"

    def terminate(self) -> None:
        """Stop now: what still runs is abandoned (and a local cluster stopped)."""
        self._state = "terminated"
        for future in list(self._results):
            future.cancel()
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __repr__(self):
        return f"<distributed3.multiprocessing.Pool state={self._state} pool={self._pool!r}>"
