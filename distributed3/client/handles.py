"""The ``RemoteData`` handle: a value that lives on the workers.

>>> only(("127.0.0.1", 1))
frozenset({('127.0.0.1', 1)})
"""
import asyncio
import pickle
import weakref

from ..core.server import raise_remote
from ..core.protocol import sizeof
from ..utils import format_address

_ONLY = {}


def only(worker):
    """``frozenset({worker})``, one per worker: the results of a big map share it.

    >>> only(("127.0.0.1", 1)) is only(("127.0.0.1", 1))
    True
    """
    found = _ONLY.get(worker)
    if found is None:
        if len(_ONLY) > 10_000:
            _ONLY.clear()
        found = _ONLY[worker] = frozenset((worker,))
    return found


class Awaitable:
    """Something a task makes: ``status`` is ``"pending"`` until it ends, and ``wait()``
    waits for that on the pool's loop."""

    __slots__ = ()

    def done(self):
        """Whether the task has ended (finished or failed), as for a future."""
        return self.status != "pending"

    async def wait(self):
        """Wait, on the pool's loop, until the task has ended."""
        if self.status == "pending":
            future = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(future)
            await future

    def _wake(self):
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():
                future.set_result(None)


class RemoteData(Awaitable):
    """A handle to a value that lives on the workers; ``get()`` brings it here.

    Made by ``Pool.map``, ``apply``, ``scatter``.  Pass handles back into
    ``map``/``apply`` to compute where the data already is.

    ``status`` is ``"finished"``, ``"error"`` (``get()`` re-raises the task's
    exception, with the remote traceback as its cause) or ``"deleted"``.
    ``workers`` (a frozenset, replaced rather than changed) is where the pool last
    knew it to live, ``nbytes`` its size.  An element of a chunked map's results
    belongs to its chunk's ``group`` (a :class:`~distributed3.client.results.ResultGroup`) at
    ``index``; its data lives, and is released, with that chunk.
    """

    __slots__ = ("key", "pool", "workers", "nbytes", "status", "exception", "traceback",
                 "recipe", "source", "inline", "group", "index", "_waiters",
                 "__weakref__")  # fmt: skip

    def __init__(self, key, pool, workers=(), nbytes=None, status="finished"):
        self.key = key
        self.pool = pool
        self.workers = frozenset(workers)
        self.nbytes = nbytes
        self.status = status
        self.exception = None
        self.traceback = None
        self.recipe = None  # how to compute it again (results.Recipe)
        self.source = None  # for scattered data: the value, or a weak reference to it
        self.inline = None  # a small result, pickled, as it came with the task's reply
        self.group = None
        self.index = None
        self._waiters = None

    def __repr__(self):
        center = format_address(self.pool.center_address) if self.pool else "?"
        extra = "" if self.status == "finished" else f", status={self.status}"
        return f"RemoteData<center={center}, key={self.key}{extra}>"

    def set_error(self, exception, traceback, worker=None):
        self.status = "error"
        self.exception = exception
        self.traceback = traceback
        if worker is not None:
            self.workers = only(worker)
        self._wake()

    def set_finished(self, worker, nbytes, inline=None):
        self.status = "finished"
        self.workers = only(worker)
        self.nbytes = nbytes
        self.inline = inline
        self._wake()

    def raise_error(self):
        """Re-raise the task's exception with its remote traceback as ``__cause__``."""
        worker = next(iter(self.workers), None)
        raise_remote(self.exception, self.traceback or "", worker or "a worker")

    def keep_source(self, value, small=1 << 20):
        """Remember a scattered value so it can be sent again if its worker dies.

        A weak reference when the value allows one (the user's own copy decides
        how long it lives); otherwise the value itself, when it is small.
        """
        try:
            self.source = weakref.ref(value)
        except TypeError:
            self.source = (value,) if sizeof(value) < small else None

    def held_source(self):
        """``(value,)`` if the client still holds the scattered value, else ``None``."""
        if isinstance(self.source, weakref.ref):
            value = self.source()
            return None if value is None else (value,)
        return self.source

    def get(self, timeout=None):
        """The value, gathered from the worker that holds it.

        >>> pool.apply(sum, ([1, 2, 3],)).get()
        6
        """
        if self.status == "finished":  # small results came with the reply
            if self.inline is not None:
                return pickle.loads(self.inline)
            if self.group is not None and self.group.pickled is not None:
                return self.group.value(self.index)
        return self.pool._sync(self.pool._gather([self]), timeout)[0]

    async def aget(self):
        """Async form of :meth:`get`."""
        return (await self.pool.agather([self]))[0]

    def result(self, timeout=None):
        """Same as :meth:`get`, under the name ``concurrent.futures`` uses."""
        return self.get(timeout)

    def __del__(self):
        pool = self.pool
        if pool is not None and self.status != "deleted" and self.group is None:
            try:
                pool._release_soon(self.key)
            except Exception:  # the pool's loop is gone: interpreter shutdown
                pass

    def __reduce__(self):
        raise TypeError(
            f"{self!r} cannot be pickled: pass it to pool.map/apply, which send its key"
        )
