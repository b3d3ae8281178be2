"""The ``RemoteData`` handle: a value that lives on the workers.

>>> only(("127.0.0.1", 1))
frozenset({('127.0.0.1', 1)})
"""
import asyncio
import pickle
import weakref
from typing import Any, Generic, TypeVar

from ..core.protocol import sizeof
from ..core.server import raise_remote
from ..utils import format_address

_ONLY: dict[Any, frozenset] = {}
_MISSING = object()
T = TypeVar("T")


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


class Held:
    """What a task makes, held on the cluster: one value (:class:`RemoteData`) or a
    chunk's values under one key (:class:`~distributed3.client.results.ResultGroup`).

    Both answer the same small interface, so callers need not ask which they hold:
    ``key``, ``status`` (``"pending"`` until the task ends), ``workers``, ``size``
    (how many values), ``handle(i)`` and ``handles()`` (the values' ``RemoteData``),
    ``made()`` (those that exist now), ``intact()`` (finished, nothing failed or
    deleted, all held under its key), ``complete()`` (every value can be had),
    ``inline_values()`` (the values, when they came with the reply),
    ``settle(reply, worker)``, ``set_error(...)``, ``set_deleted()``, ``done()`` and
    ``wait()``.  ``keeps_parts`` says whether a worker holds it as one entry of many
    parts that a map can go over in place.
    """

    __slots__ = ()  # the subclasses' slots hold what is declared here
    key: str
    session: Any
    status: str
    _waiters: list | None
    keeps_parts = False
    seconds = None  # how long its tasks ran, when the reply said
    group = None  # the chunk an element belongs to

    def done(self) -> bool:
        """Whether the task has ended (finished or failed), as for a future."""
        return self.status != "pending"

    async def wait(self) -> None:
        """Wait, on the pool's loop, until the task has ended."""
        if self.status == "pending":
            future = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []  # type: ignore[misc]  # a slot of the subclass
            self._waiters.append(future)
            await future

    def _wake(self):
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():
                future.set_result(None)

    def finished(self):
        """``[self]`` once it holds a result, else ``[]``."""
        return [self] if self.status == "finished" else []

    def complete(self):
        """Whether every value it stands for can be had: for one value, ``intact()``."""
        return self.intact()


class RemoteData(Held, Generic[T]):
    """A handle to a value that lives on the workers; ``get()`` brings it here.

    Made by ``Pool.map``, ``apply``, ``scatter``.  Pass handles back into
    ``map``/``apply`` to compute where the data already is.

    ``status`` is ``"finished"``, ``"error"`` (``get()`` re-raises the task's
    exception, with the remote traceback as its cause), ``"deleted"``, or
    ``"released"`` (a graph's intermediate result, let go on the workers; its recipe
    can make it again).
    ``workers`` (a frozenset, replaced rather than changed) is where the pool last
    knew it to live, ``nbytes`` its size.  An element of a chunked map's results
    belongs to its chunk's ``group`` (a :class:`~distributed3.client.results.ResultGroup`) at
    ``index``; its data lives, and is released, with that chunk.

    >>> h = RemoteData("x", None, status="pending")
    >>> h.settle({"key": "x", "nbytes": 28, "pickled": None}, ("127.0.0.1", 1))
    >>> h.status, h.size, h.handles() == [h], h.nbytes
    ('finished', 1, True, 28)
    """

    __slots__ = ("key", "session", "workers", "nbytes", "status", "exception", "traceback",
                 "recipe", "source", "inline", "group", "index", "_waiters",
                 "__weakref__")  # fmt: skip
    size = 1
    key: str
    status: str
    nbytes: int | None

    def __init__(self, key, session, workers=(), nbytes=None, status="finished"):
        self.key = key
        self.session = session
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
        center = format_address(self.session.center_address) if self.session else "?"
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

    def handle(self, index):
        """Itself: a lone value is its own element 0."""
        return self

    def handles(self):
        return [self]

    def made(self):
        return [self]

    def intact(self):
        return self.status == "finished"

    def local_value(self, missing=None):
        """Its value, if it came with the task's reply (its own, or its chunk's), a fresh
        copy each call; else ``missing``."""
        if self.inline is not None:
            return pickle.loads(self.inline)
        group = self.group
        if group is not None and group.pickled is not None and self.index < group.head:
            return group.value(self.index)
        return missing

    def inline_values(self):
        if self.inline is None:
            return None
        return [pickle.loads(self.inline)]

    def settle(self, reply, worker):
        """Take the reply of its task (see ``Worker.compute``); a result counts once."""
        if self.status != "pending":
            return
        if "exception" in reply:
            self.set_error(reply["exception"], reply["traceback"], worker)
        else:
            self.set_finished(worker, reply.get("nbytes"), reply.get("pickled"))

    def set_deleted(self):
        self.status = "deleted"
        self.workers = frozenset()
        if self.group is not None:
            self.group.drop(self)

    def get(self, timeout: float | None = None) -> T:
        """The value, gathered from the worker that holds it.

        >>> pool.apply(sum, ([1, 2, 3],)).get()
        6
        """
        if self.status == "finished":  # small results came with the reply
            value = self.local_value(_MISSING)
            if value is not _MISSING:
                return value
        return self.session.sync(self.session.gather([self]), timeout)[0]

    async def aget(self) -> T:
        """Async form of :meth:`get`."""
        return (await self.session.run(self.session.gather([self])))[0]

    def result(self, timeout: float | None = None) -> T:
        """Same as :meth:`get`, under the name ``concurrent.futures`` uses."""
        return self.get(timeout)

    def __del__(self):
        session = self.session
        if session is not None and self.group is None and self.status not in _GONE:
            try:
                session.release_soon(self.key)
            except Exception:  # the pool's loop is gone: interpreter shutdown
                pass

    def __dask_tokenize__(self):
        """What dask hashes it by (a persisted collection's graph holds handles)."""
        return ("RemoteData", self.key)

    def __reduce__(self):
        raise TypeError(
            f"{self!r} cannot be pickled: pass it to pool.map/apply, which send its key"
        )


_GONE = frozenset({"deleted", "released"})  # statuses whose key was let go already


def total_bytes(nbytes):
    """Bytes of a handle's value: its ``nbytes``, which a chunk of results may keep per
    element (``None`` where unknown).

    >>> total_bytes([10, None, 5]), total_bytes(7), total_bytes(None)
    (15, 7, 0)
    """
    if type(nbytes) is list:
        return sum(n for n in nbytes if n is not None)
    return nbytes or 0


def split_off(handles):
    """The keys of the ``handles`` that are elements split off from their running chunk
    (see :meth:`~.results.ResultGroup.split`): held on their own, never within the
    chunk's key.

    >>> split_off([RemoteData("x", None)])
    []
    """
    return [h.key for h in handles
            if getattr(h, "group", None) is not None and h.index >= h.group.head]  # fmt: skip


def check_cluster(session, handles):
    """Raise ``ValueError`` if one of ``handles`` (a call's inputs) is a result of a pool
    on another cluster: ``session``'s workers could not fetch it (its workers do not
    share their secret).  Two pools on one cluster share their results freely.

    >>> check_cluster(pool.session, pool.scatter([1]))
    >>> from distributed3 import Pool
    >>> with Pool(n_workers=1) as other:  # doctest: +ELLIPSIS
    ...     check_cluster(pool.session, other.scatter([1]))
    Traceback (most recent call last):
    ValueError: input '...' is a result of the pool on the cluster at 127.0.0.1:..., not of this one on 127.0.0.1:...: its workers cannot fetch it from there. Pass its value (.get()), or use that pool
    """
    for h in handles:
        other = h.session
        if other is None or other is session or other.secret == session.secret:
            continue
        theirs = getattr(other, "center_address", None) or other.session.center_address
        raise ValueError(
            f"input {h.key!r} is a result of the pool on the cluster at "
            f"{format_address(theirs)}, not of this one on "
            f"{format_address(session.center_address)}: its workers cannot fetch it from "
            f"there. Pass its value (.get()), or use that pool"
        )
