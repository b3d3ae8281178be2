"""``as_completed`` and ``wait`` for ``RemoteData``, as ``concurrent.futures`` has them.

>>> from distributed3 import Pool
>>> with Pool(n_workers=1) as pool:
...     futures = [pool.submit(pow, 2, n) for n in range(4)]
...     sorted(f.result() for f in as_completed(futures))
[1, 2, 4, 8]
"""
import asyncio
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import Generic, NamedTuple, TypeVar

from .handles import RemoteData

T = TypeVar("T")


class DoneAndNotDone(NamedTuple, Generic[T]):
    """What :func:`wait` returns, as ``concurrent.futures.wait`` does."""

    done: set[RemoteData[T]]
    not_done: set[RemoteData[T]]


__all__ = ["as_completed", "wait", "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]


class _Endings:
    """The handles' endings, queued on the pool's loop as they happen: one waiter per
    handle for the whole wait, not one per handle each time the caller wakes up."""

    def __init__(self, handles):
        self.handles = handles
        self.queue = None
        self.waiters = []

    async def start(self):
        self.queue = asyncio.Queue()
        self.waiters = [asyncio.ensure_future(self._one(h)) for h in self.handles]

    async def _one(self, handle):
        await handle.wait()
        self.queue.put_nowait(handle)

    async def next(self):
        """Every handle that ended since the last call (waits for at least one)."""
        return [await self.queue.get(), *await self.ready()]

    async def ready(self):
        """The handles that ended since the last call, without waiting."""
        ended = []
        while not self.queue.empty():
            ended.append(self.queue.get_nowait())
        return ended

    async def stop(self):
        for w in self.waiters:
            w.cancel()


def _session_of(handles):
    sessions = {id(h.session): h.session for h in handles}
    if len(sessions) > 1:
        raise ValueError("as_completed/wait take handles of one pool at a time")
    return next(iter(sessions.values()))


def as_completed(handles: Iterable[RemoteData[T]],
                 timeout: float | None = None) -> Iterator[RemoteData[T]]:  # fmt: skip
    """Yield the handles as their tasks end (finished or failed).

    Raises ``TimeoutError`` if they have not all ended within ``timeout`` seconds.

    >>> [h.get() for h in as_completed([pool.submit(abs, -3)])]
    [3]
    """
    pending = list(dict.fromkeys(handles))
    if not pending:
        return
    session = _session_of(pending)
    deadline = None if timeout is None else time.monotonic() + timeout
    endings = _Endings(pending)
    session.sync(endings.start())
    left = len(pending)
    try:
        while left:
            if deadline is None:
                ended = session.sync(endings.next())
            else:
                wait_s = deadline - time.monotonic()
                if wait_s > 0:
                    try:
                        ended = session.sync(endings.next(), wait_s)
                    except TimeoutError:
                        ended = []
                else:  # out of time: only what has ended already
                    ended = session.sync(endings.ready())
                if not ended:
                    raise TimeoutError(f"{left} of the tasks did not end within {timeout} s")
            for h in ended:
                left -= 1
                yield h
    finally:
        if session.status == "running":
            session.sync(endings.stop())


def wait(handles: Iterable[RemoteData[T]], timeout: float | None = None,
         return_when: str = ALL_COMPLETED) -> DoneAndNotDone[T]:  # fmt: skip
    """``(done, not_done)`` sets once ``return_when`` holds or ``timeout`` passes.

    ``return_when`` is ``ALL_COMPLETED``, ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``.

    >>> done, not_done = wait([pool.submit(abs, -1), pool.submit(abs, -2)])
    >>> sorted(h.get() for h in done), not_done
    ([1, 2], set())
    """
    pending = set(handles)
    done: set[RemoteData[T]] = set()
    try:
        for h in as_completed(pending, timeout):
            done.add(h)
            if return_when == FIRST_COMPLETED:
                break
            if return_when == FIRST_EXCEPTION and h.status == "error":
                break
    except TimeoutError:
        pass
    return DoneAndNotDone(done, pending - done)
