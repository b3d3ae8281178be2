"""Streaming results: the values of whatever finished, while the rest still run.

::

    stream()   reads its input a window at a time: submit(wait=False, feed=...) --
                 the windows' tasks run in one batch in the background (see feed.py)
                 each time tasks end: their values, from the replies (small results)
                 or fetched (one request per worker), as one batch, in input order
                 (``ordered``) or as they end; the handles are dropped at once, so
                 their keys are released on the workers
    drain()    a blocking generator over stream(): one hop between threads per batch

``Pool.imap``, ``imap_unordered`` and ``aimap`` (and a stateful pool's) are built on
these two functions of a :class:`~distributed3.client.session.Session`.
"""
import asyncio
import itertools
import sys

from .data import values_of
from .feed import Feed
from .options import DEFAULTS
from .progress import progress_bar
from .tasks import call_name, submit


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


async def stream(session, func, items, kwargs, *, ordered=True, options=DEFAULTS,
                 total=None, window=None):  # fmt: skip
    """Yield lists of ``(True, value)`` or ``(False, failed handle)`` for ``func(*args)``
    over the argument tuples ``items``, in input order (``ordered``) or as tasks finish;
    each list is what became ready at once.  ``total``: how many items, if known, for
    the progress bar.

    The input is read as it goes: at most ``window`` tasks are in flight or waiting to
    be yielded, so an endless generator starts at once and uses bounded memory.  By
    default that is 4 per core (at least 16), and twice what the workers may have in
    flight once replies show the tasks are short (up to 128 a core, see
    :func:`~distributed3.scheduling.pipeline_depth`), so that tiny tasks stream as fast
    as a map sends them.  Task ``i`` gets the seed it would get in ``map``.

    >>> session = pool.session
    >>> list(drain(session, stream(session, abs, [(-1,), (-2,)], {})))
    [1, 2]
    """
    options = stream_options(options)
    # one bar for the stream, not one a window; values only: the small results that
    # come with the replies are not kept on the workers (nor released later)
    quiet = options.replace(progress=False, values_only=True)
    least = max(16, 4 * sum(session.cores.values()), 2 * options.chunksize)
    grows = window is None and options.chunksize == 1  # with the depth of short tasks
    items = iter(items)
    bar = progress_bar(total, call_name(func, options)) if options.progress else None
    queue = asyncio.Queue()
    # one batch for the windows: what it learned of the tasks' length holds for the next
    feed = Feed(session, call_name(func, options), options=quiet, on_done=queue.put_nowait)
    window = window or least
    position, ready, next_index, taken, exhausted = {}, {}, 0, 0, False
    try:
        while True:
            if grows:
                window = max(least, 2 * feed.capacity())
            if not exhausted and taken - next_index <= window // 2:  # refill, in bulk
                arglists = list(itertools.islice(items, window - (taken - next_index)))
                exhausted = not arglists
                if arglists:
                    handles = await submit(session, func, arglists, kwargs, options=quiet,
                                           wait=False, start=taken, feed=feed)  # fmt: skip
                    position.update((h.key, taken + i) for i, h in enumerate(handles))
                    taken += len(arglists)
                    del handles  # a yielded value's handle can be collected and released
            if exhausted and next_index == taken:
                return
            batch = await _next_batch(session, queue, position, ready, ordered, next_index)
            next_index += len(batch)
            if bar is not None:
                bar.update(len(batch))
            if batch:
                yield batch
    finally:
        if bar is not None:
            bar.close()


async def _next_batch(session, queue, position, ready, ordered, next_index):
    """The outcomes to yield once at least one task has ended: as they ended, or in
    input order from ``next_index`` on (the others wait in ``ready`` for their turn)."""
    finished = list(await queue.get())
    while not queue.empty():
        finished.extend(queue.get_nowait())
    good = {h.key: h for h in finished if h.status == "finished"}
    values = await values_of(session, good) if good else {}
    kept_nowhere = [h for h in good.values() if h.inline is not None]
    for h in kept_nowhere:  # its worker kept nothing: nothing to release, ever
        h.status = "released"
    session.forget([h.key for h in kept_nowhere])
    outcomes = [(position.pop(h.key), (True, values[h.key]) if h.key in good else (False, h))
                for h in finished]  # fmt: skip
    if not ordered:
        return [outcome for _, outcome in outcomes]
    ready.update(outcomes)
    batch = []
    while next_index + len(batch) in ready:
        batch.append(ready.pop(next_index + len(batch)))
    return batch


def drain(session, agen):
    """A blocking generator of the values in the batches of ``agen`` (a :func:`stream`),
    which runs on the session's loop; a failed task's error is raised in its place."""
    for outcome in outcomes(session, agen):
        yield unwrap(outcome)


def outcomes(session, agen):
    """A blocking generator of the outcomes in the batches of ``agen``: ``(True,
    value)``, or ``(False, failed handle)`` (see :func:`unwrap`)."""
    try:
        while True:
            try:
                batch = session.sync(agen.__anext__())
            except StopAsyncIteration:
                return
            yield from batch
    finally:  # the stream's tasks stop; not once the session closed (or, at exit, the
        # interpreter ends: a generator left open is finalized then, with no loop to run)
        if session.status == "running" and not sys.is_finalizing():
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
