"""Streaming results: the values of whatever finished, while the rest still run.

::

    stream()   submit(wait=False, on_done=queue.put)  -- tasks run in the background
                 each time tasks end: their values, from the replies (small results)
                 or fetched (one request per worker), as one batch, in input order
                 (``ordered``) or as they end; the handles are dropped at once, so
                 their keys are released on the workers
    drain()    a blocking generator over stream(): one hop between threads per batch

``Pool.imap``, ``imap_unordered`` and ``aimap`` (and a stateful pool's) are built on
these two functions of a :class:`~distributed3.client.session.Session`.
"""
import asyncio

from .data import values_of
from .options import DEFAULTS
from .tasks import submit


def unwrap(outcome):
    """The value of a ``(True, value)`` outcome; a ``(False, handle)`` raises its error.

    >>> unwrap((True, 3))
    3
    """
    ok, value = outcome
    if ok:
        return value
    value.raise_error()


def stream_options(options):
    """A stream sends one task per message unless told: it yields as tasks end.

    >>> stream_options(DEFAULTS).chunksize, stream_options(DEFAULTS.replace(chunksize=5)).chunksize
    (1, 5)
    """
    return options if options.chunksize else options.replace(chunksize=1)


async def stream(session, func, arglists, kwargs, *, ordered=True, options=DEFAULTS):
    """Yield lists of ``(True, value)`` or ``(False, failed handle)``, in input order
    (``ordered``) or as tasks finish; each list is what became ready at once.

    >>> session = pool.session
    >>> list(drain(session, stream(session, abs, [(-1,), (-2,)], {})))
    [1, 2]
    """
    queue = asyncio.Queue()
    handles = await submit(session, func, arglists, kwargs, options=stream_options(options),
                           wait=False, on_done=queue.put_nowait)  # fmt: skip
    position = {h.key: i for i, h in enumerate(handles)}
    del handles  # from here on, a yielded value's handle can be collected and released
    ready, next_index, left = {}, 0, len(position)
    while left:
        finished = list(await queue.get())
        while not queue.empty():
            finished.extend(queue.get_nowait())
        good = {h.key: h for h in finished if h.status == "finished"}
        values = await values_of(session, good) if good else {}
        batch = []
        for h in finished:
            outcome = (True, values[h.key]) if h.key in good else (False, h)
            left -= 1
            if not ordered:
                batch.append(outcome)
            else:
                ready[position[h.key]] = outcome
        while next_index in ready:
            batch.append(ready.pop(next_index))
            next_index += 1
        del finished, good, values
        if batch:
            yield batch


def drain(session, agen):
    """A blocking generator of the values in the batches of ``agen`` (a :func:`stream`),
    which runs on the session's loop."""
    try:
        while True:
            try:
                batch = session.sync(agen.__anext__())
            except StopAsyncIteration:
                return
            for outcome in batch:
                yield unwrap(outcome)
    finally:
        try:
            session.sync(agen.aclose())
        except Exception:
            pass


async def adrain(session, agen):
    """The async twin of :func:`drain`, for a caller on any loop."""
    while True:
        try:
            batch = await session.run(agen.__anext__())
        except StopAsyncIteration:
            return
        for outcome in batch:
            yield unwrap(outcome)
