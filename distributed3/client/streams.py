"""The Pool's streaming forms: ``imap``, ``imap_unordered``, ``aimap``.

A mixin of :class:`distributed3.client.pool.Pool`: tasks run in the background; the values
of whatever finished are taken from the replies (small results) or fetched (one
request per worker), and handed to the caller's thread as one batch while the rest
still run -- one hop between threads per batch, not per value.  Yielded handles are
dropped at once, so their keys are released on the workers.
"""
import asyncio

from .tasks import Options


def _unwrap(outcome):
    ok, value = outcome
    if ok:
        return value
    value.raise_error()


class StreamingMixin:

    def imap(self, func, *iterables, chunksize=1, seed=None, progress=False, resources=None,
             **kwargs):  # fmt: skip
        """Like :meth:`map`, but yield the *values*, in order, while later tasks still run.

        >>> list(pool.imap(lambda x: x + 1, range(3)))
        [1, 2, 3]
        """
        options = Options(None, 3, chunksize, seed, progress, resources=resources)
        return self._iterate(func, iterables, kwargs, True, options)

    def imap_unordered(self, func, *iterables, chunksize=1, seed=None, progress=False,
                       resources=None, **kwargs):  # fmt: skip
        """Like :meth:`imap`, but yield values in the order tasks finish.

        >>> sorted(pool.imap_unordered(lambda x: x * 2, range(3)))
        [0, 2, 4]
        """
        options = Options(None, 3, chunksize, seed, progress, resources=resources)
        return self._iterate(func, iterables, kwargs, False, options)

    def _iterate(self, func, iterables, kwargs, ordered, options):
        agen = self._stream(func, list(zip(*iterables)), kwargs, ordered, options)
        return self._drain(agen)

    def _drain(self, agen):
        """A blocking generator of the values in the batches of an async generator that
        runs on the pool's loop (see :meth:`_stream`)."""
        try:
            while True:
                try:
                    batch = self._sync(agen.__anext__())
                except StopAsyncIteration:
                    return
                for outcome in batch:
                    yield _unwrap(outcome)
        finally:
            try:
                self._sync(agen.aclose())
            except Exception:
                pass

    async def aimap(self, func, *iterables, ordered=True, chunksize=1, seed=None, **kwargs):
        """Async iterator form of :meth:`imap` (``ordered=False``: :meth:`imap_unordered`)."""
        options = Options(None, 3, chunksize, seed)
        agen = self._stream(func, list(zip(*iterables)), kwargs, ordered, options)
        while True:
            try:
                batch = await self._run(agen.__anext__())
            except StopAsyncIteration:
                return
            for outcome in batch:
                yield _unwrap(outcome)

    async def _stream(self, func, arglists, kwargs, ordered, options):
        """Yield lists of ``(True, value)`` or ``(False, failed handle)``, in input order
        (``ordered``) or as tasks finish; each list is what became ready at once."""
        queue = asyncio.Queue()
        handles = await self._submit(func, arglists, kwargs, options, wait=False,
                                     on_done=queue.put_nowait)  # fmt: skip
        position = {h.key: i for i, h in enumerate(handles)}
        del handles  # from here on, a yielded value's handle can be collected and released
        ready, next_index, left = {}, 0, len(position)
        while left:
            finished = await queue.get()
            while not queue.empty():
                finished = finished + queue.get_nowait()
            good = {h.key: h for h in finished if h.status == "finished"}
            values = await self._values(good) if good else {}
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
