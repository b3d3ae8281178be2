"""``as_completed`` and ``wait`` for ``RemoteData``, as ``concurrent.futures`` has them.

>>> from distributed3 import Pool
>>> with Pool(n_workers=1) as pool:
...     futures = [pool.submit(pow, 2, n) for n in range(4)]
...     sorted(f.result() for f in as_completed(futures))
[1, 2, 4, 8]
"""
import asyncio
import time
from collections import namedtuple
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION

DoneAndNotDone = namedtuple("DoneAndNotDone", "done not_done")

__all__ = ["as_completed", "wait", "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]


async def _wait_any(handles):
    waits = [asyncio.ensure_future(h.wait()) for h in handles]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _pool_of(handles):
    pools = {id(h.pool): h.pool for h in handles}
    if len(pools) > 1:
        raise ValueError("as_completed/wait take handles of one pool at a time")
    return next(iter(pools.values()))


def as_completed(handles, timeout=None):
    """Yield the handles as their tasks end (finished or failed).

    Raises ``TimeoutError`` if they have not all ended within ``timeout`` seconds.
    """
    pending = list(dict.fromkeys(handles))
    if not pending:
        return
    pool = _pool_of(pending)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        ended = [h for h in pending if h.done()]
        if not ended:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(pending)} of the tasks did not end within {timeout} s")
            try:
                pool._sync(_wait_any(pending), left)
            except TimeoutError:
                continue
            continue
        for h in ended:
            pending.remove(h)
            yield h


def wait(handles, timeout=None, return_when=ALL_COMPLETED):
    """``(done, not_done)`` sets once ``return_when`` holds or ``timeout`` passes.

    ``return_when`` is ``ALL_COMPLETED``, ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``.
    """
    handles = set(handles)
    done = set()
    try:
        for h in as_completed(handles, timeout):
            done.add(h)
            if return_when == FIRST_COMPLETED:
                break
            if return_when == FIRST_EXCEPTION and h.status == "error":
                break
    except TimeoutError:
        pass
    return DoneAndNotDone(done, handles - done)
