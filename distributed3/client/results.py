"""The results of a map, kept one key per chunk, with handles made only when asked for.

A map of 100,000 tiny tasks goes out in a few dozen chunks.  Each chunk's results
stay on its worker as one entry (a :class:`~distributed3.keys.Parts` list under
the chunk's key), the center tracks that one key, and the client keeps one
:class:`ResultGroup`.  ``pool.map`` returns a :class:`RemoteList`: a sequence
whose ``RemoteData`` handles are made when first asked for.  Element ``i`` of
chunk ``G`` has the key ``G#i``, which workers and the center resolve through
``G``::

    RemoteList --> [ResultGroup G1 (625 results), ResultGroup G2, ...]
       [i]      -> RemoteData("G1#i"), made on demand, settled with its chunk
       gather   -> one unpickling per chunk: small results came with the reply

A chunk's data is released when nothing refers to its group any more: neither
the list nor a handle of one of its elements.
"""
import hashlib
import operator
import pickle
import threading
import weakref
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from ..keys import KeyRef, element_key
from ..utils import gc_paused
from .handles import Held, RemoteData, only
from .options import DEFAULTS  # noqa: F401 -- the options of the doctests here

_NONE = object()
T = TypeVar("T")


def task_seed(seed, index):
    """The seed of task ``index`` of a map seeded with ``seed``: the same on any worker.

    >>> task_seed(123, 0) == task_seed(123, 0) != task_seed(123, 1)
    True
    """
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Recipe:
    """How one element's result is made -- its compute message is built when needed
    (the first run of a lone task, or recomputing it), not kept per element -- and the
    call's :class:`~distributed3.client.options.Options`, which a recomputation runs under.

    >>> r = Recipe({"op": "compute", "function": b"f"}, (1, 2), 7, DEFAULTS, {})
    >>> r.message("k")
    {'op': 'compute', 'function': b'f', 'key': 'k', 'args': (1, 2)}
    """

    __slots__ = ("base", "args", "index", "options", "inputs")

    def __init__(self, base, args, index, options, inputs):
        self.base = base
        self.args = args
        self.index = index
        self.options = options
        self.inputs = inputs

    def message(self, key):
        msg = {**self.base, "key": key, "args": self.args}
        if self.options.seed is not None:
            msg["seed"] = self.task_seed()
        return msg

    def task_seed(self):
        """This element's seed, from the call's ``seed`` and its position."""
        return task_seed(self.options.seed, self.index)


class ChunkRecipe:
    """How the elements of a chunk are made: the message base, the argument tuples (with
    ``single``, each element's one argument instead), the position of the first
    element, the call's options and the inputs all elements share.

    >>> ChunkRecipe({}, [(1,), (2,)], 10, DEFAULTS, {}).element(1).args
    (2,)
    >>> ChunkRecipe({}, [1, 2], 10, DEFAULTS, {}, single=True).element(1).args
    (2,)
    """

    __slots__ = ("base", "args", "first", "options", "inputs", "single")

    def __init__(self, base, args, first, options, inputs, single=False):
        self.base = base
        self.args = args
        self.first = first
        self.options = options
        self.inputs = inputs
        self.single = single

    @property
    def size(self):
        return len(self.args)

    def element(self, index):
        """The recipe of element ``index`` alone."""
        args = (self.args[index],) if self.single else self.args[index]
        return Recipe(self.base, args, self.first + index, self.options, self.inputs)


class OverChunk(ChunkRecipe):
    """A chunk that maps a function over ``count`` elements of another chunk's results
    (``args``), from ``offset`` on, on the worker that holds them (``pool.map(f,
    results)``): element ``i`` is ``f(source[offset + i])``, whose handle is its input.

    >>> source = ResultGroup("g", None, ChunkRecipe({}, [(1,), (2,), (3,)], 0, DEFAULTS, {}))
    >>> r = OverChunk({}, source, 1, DEFAULTS, {}, offset=1, count=2).element(1)
    >>> r.args, list(r.inputs), r.index
    ((KeyRef('g#2'),), ['g#2'], 2)
    """

    __slots__ = ("offset", "count")

    def __init__(self, base, source, first, options, inputs, offset, count):
        super().__init__(base, source, first, options, inputs)
        self.offset = offset
        self.count = count

    @property
    def size(self):
        return self.count

    def element(self, index):
        source = self.args.handle(self.offset + index)
        return Recipe(self.base, (KeyRef(source.key),), self.first + index, self.options,
                      {source.key: source, **self.inputs})  # fmt: skip


class ResultGroup(Held):
    """The results of one chunk of a map, kept by a worker under one key.

    ``status`` is ``"pending"``, ``"finished"`` (failed elements are in
    ``errors``: ``{index: (exception, traceback)}``) or ``"deleted"``;
    ``pickled`` is every result pickled together when all were small.  Its
    :class:`ChunkRecipe` makes each element's own recipe, to compute it again.
    A chunk whose worker stopped early, for an idle core to run the rest (see
    :meth:`split`), holds its first ``head`` elements under its key; the others are
    ``apart``, each under its own key (``G#i``): what their task said of each is kept
    here, and the handles made of them follow it.

    >>> g = ResultGroup("f-1", None, ChunkRecipe({}, [(1,), (2,)], 10, DEFAULTS, {}))
    >>> g.settle({"nbytes": [28, None], "pickled": None,
    ...           "errors": {1: {"exception": ValueError(), "traceback": ""}}}, ("h", 1))
    >>> [g.handle(i).status for i in range(2)], g.handle(1).key, g.handle(0).recipe.index
    (['finished', 'error'], 'f-1#1', 10)
    """

    __slots__ = ("key", "session", "size", "head", "apart", "status", "workers", "nbytes",
                 "pickled", "errors", "recipe", "seconds", "deleted", "_made", "_spare", "_lock",
                 "_waiters", "__weakref__")  # fmt: skip
    keeps_parts = True

    def __init__(self, key, session, recipe):
        self.key = key
        self.session = session
        self.recipe = recipe
        self.size = self.head = recipe.size
        self.apart = {}  # index -> what the task of an element run apart said (split)
        self.status = "pending"
        self.workers = frozenset()
        self.nbytes = None
        self.pickled = None
        self.errors = {}
        self.seconds = None  # how long its tasks ran on the worker, all together
        self.deleted = set()  # elements deleted on their own (pool.delete of their handle)
        self._made = None  # [weak reference or None] per element: the handles made so far
        self._spare = {}  # {index: value} unpickled but not handed out yet, see value()
        self._lock = threading.Lock()  # handles are made in any thread
        self._waiters = None

    def __len__(self):
        return self.size

    def __repr__(self):
        return f"ResultGroup<key={self.key}, size={self.size}, status={self.status}>"

    def handle(self, index):
        """The ``RemoteData`` of element ``index``: the same object while it lives."""
        made = self._made
        ref = None if made is None else made[index]
        handle = None if ref is None else ref()
        if handle is not None:
            return handle
        with self._lock:
            if self._made is None:
                self._made = [None] * self.size
            ref = self._made[index]
            handle = None if ref is None else ref()
            if handle is None:
                handle = RemoteData(element_key(self.key, index), self.session, status="pending")
                handle.group = self
                handle.index = index
                handle.recipe = self.recipe.element(index)
                if self.status == "deleted" or index in self.deleted:
                    handle.status = "deleted"
                elif index >= self.head:
                    _copy(self.apart[index], handle)
                elif self.status == "finished":
                    self._fill(handle, index)
                self._made[index] = weakref.ref(handle)
        return handle

    def handles(self):
        return [self.handle(i) for i in range(self.size)]

    def made(self):
        """The element handles that exist now."""
        with self._lock:
            refs = self._made or ()
        return [h for h in (r() for r in refs if r is not None) if h is not None]

    def intact(self):
        """Finished, no element failed, none was deleted on its own, and all are held
        under its key (none was split off)."""
        return (self.status == "finished" and not self.errors and not self.deleted
                and not self.apart)  # fmt: skip

    def complete(self):
        """Finished, no element failed, none was deleted: every value can be had, from
        its key or (those split off) their own."""
        return (self.status == "finished" and not self.errors and not self.deleted
                and all(h.status == "finished" for h in self.apart.values()))  # fmt: skip

    def split(self, stop):
        """Its worker stopped the chunk at element ``stop``: the elements from there to
        ``head`` are run apart, each kept under its own key.  The results of the task
        that runs them (see :meth:`~distributed3.client.task.Task.split`).

        >>> g = ResultGroup("f-1", None, ChunkRecipe({}, [(1,), (2,), (3,)], 0, DEFAULTS, {}))
        >>> rest = g.split(1)
        >>> [h.key for h in rest], g.head, g.intact()
        (['f-1#1', 'f-1#2'], 1, False)
        >>> rest.settle({"nbytes": [28, 28], "pickled": [None, None], "errors": {}}, "w")
        >>> g.handle(2).status, g.handle(2).workers
        ('finished', frozenset({'w'}))
        """
        rest = Apart()
        rest.group = self
        for i in range(stop, self.head):
            state = self.apart[i] = RemoteData(element_key(self.key, i), None, status="pending")
            state.index = i  # no group: it keeps none alive
            rest.append(state)
        self.head = stop
        return rest

    def follow(self, states):
        """The elements apart whose ``states`` changed: their handles follow."""
        indices = {s.index for s in states}
        for handle in self.made():
            if handle.index in indices:
                _copy(self.apart[handle.index], handle)

    def inline_values(self):
        """Every value, unpickled afresh, when they all came with the reply; else ``None``."""
        return None if self.pickled is None or self.apart else pickle.loads(self.pickled)

    def value(self, index):
        """Element ``index``'s value from the results that came with the reply, a fresh
        copy each call: the chunk is unpickled once for a pass over all its elements,
        and again only for an element handed out already."""
        value = self._spare.pop(index, _NONE)
        if value is _NONE:
            values = pickle.loads(self.pickled)
            value = values[index]
            values[index] = _NONE
            self._spare = {i: v for i, v in enumerate(values) if v is not _NONE}
        return value

    def drop(self, handle):
        """Element ``handle`` was deleted on its own."""
        self.deleted.add(handle.index)
        self._spare.pop(handle.index, None)

    def _fill(self, handle, index):
        error = self.errors.get(index)
        worker = next(iter(self.workers), None)
        if error is not None:
            handle.set_error(*error, worker)
        else:
            nbytes = self.nbytes  # a list, or the size of the chunk's pickle (small results)
            size = nbytes[index] if type(nbytes) is list else nbytes // max(self.head, 1)
            handle.set_finished(worker, size)
            handle.workers = self.workers  # every copy of the chunk (replicate)

    def settle(self, reply, worker):
        """Take a ``compute_chunk`` reply (see ``Worker.compute_chunk``); a result counts once."""
        if self.status != "pending":
            return
        self.status = "finished"
        self.workers = only(worker)
        self.nbytes = reply["nbytes"]
        self.pickled = reply["pickled"]
        self.seconds = reply.get("duration")
        self.errors = {i: (e["exception"], e["traceback"]) for i, e in reply["errors"].items()}
        self._settled()

    def set_error(self, exception, traceback, worker=None):
        """Every element failed with ``exception`` (the chunk could not run at all)."""
        if self.status != "pending":
            return
        self.status = "finished"
        if worker is not None:
            self.workers = only(worker)
        self.errors = dict.fromkeys(range(self.head), (exception, traceback))
        self._settled()

    def _settled(self):
        for handle in self.made():
            if handle.status == "pending" and handle.index < self.head:  # not those apart
                self._fill(handle, handle.index)
        self._wake()


    def set_deleted(self):
        self.status = "deleted"
        self.workers = frozenset()
        self._spare = {}
        for handle in self.made():
            handle.status = "deleted"
            handle.workers = frozenset()

    def __del__(self):
        session = self.session
        if session is not None and self.status != "deleted":
            try:
                session.release_soon(self.key)
            except Exception:  # the pool's loop is gone: interpreter shutdown
                pass

    def __reduce__(self):
        raise TypeError(f"{self!r} cannot be pickled")


class Handles(list):
    """The results of a task that keeps each under its own key: an apply's one handle,
    or the handles of a chunk whose elements have inputs of their own.  It answers what
    a task asks of a :class:`ResultGroup`: ``key``, ``settle``, ``set_error``,
    ``finished``.

    >>> hs = Handles([RemoteData("a", None, status="pending"),
    ...               RemoteData("b", None, status="pending")])
    >>> hs.settle({"nbytes": [28, None], "pickled": [None, None],
    ...            "errors": {1: {"exception": ValueError(), "traceback": ""}}}, ("h", 1))
    >>> hs.key, [h.status for h in hs], [h.key for h in hs.finished()]
    ('a', ['finished', 'error'], ['a'])
    """

    __slots__ = ()

    @property
    def key(self):
        return self[0].key

    def settle(self, reply, worker):
        """Set each handle from a ``compute`` (one handle) or ``compute_chunk`` reply.

        A result counts once, however often it came: handles no longer pending stay.
        """
        if "key" in reply:  # a lone task's reply
            self[0].settle(reply, worker)
            return
        errors = reply["errors"]
        with gc_paused(len(self)):
            for i, (handle, nbytes, pickled) in enumerate(zip(self, reply["nbytes"],
                                                               reply["pickled"])):  # fmt: skip
                if handle.status != "pending":
                    continue
                if i in errors:
                    handle.set_error(errors[i]["exception"], errors[i]["traceback"], worker)
                else:
                    handle.set_finished(worker, nbytes, pickled)

    def set_error(self, exception, traceback, worker=None):
        for handle in self:
            handle.set_error(exception, traceback, worker)

    def finished(self):
        return [h for h in self if h.status == "finished"]

    def split(self, stop):
        """Keep the first ``stop`` handles; the others, as their own :class:`Handles`."""
        rest = Handles(self[stop:])
        del self[stop:]
        return rest


class Apart(Handles):
    """The results of the elements of a chunk run apart from it (see
    :meth:`ResultGroup.split`): the group keeps what their task says of each, and the
    element handles it made follow."""

    __slots__ = ("group",)

    def settle(self, reply, worker):
        super().settle(reply, worker)
        self.group.follow(self)

    def set_error(self, exception, traceback, worker=None):
        super().set_error(exception, traceback, worker)
        self.group.follow(self)

    def split(self, stop):
        rest = Apart(self[stop:])
        rest.group = self.group
        del self[stop:]
        return rest


def _copy(state, handle):
    """Make ``handle`` (of an element apart) say what ``state`` says, once settled."""
    if state.status == "pending" or handle.status == "deleted":
        return
    if state.status == "error":
        handle.set_error(state.exception, state.traceback)
    else:
        handle.set_finished(None, state.nbytes, state.inline)
    handle.workers = state.workers


class RemoteList(Sequence[RemoteData[T]], Generic[T]):
    """What ``pool.map`` returns: a read-only list of ``RemoteData``, one per input.

    The handles of a chunked map are made when first asked for (indexing,
    iterating), so a map of a million tiny tasks costs a few dozen objects until
    then; ``pool.gather`` takes its values a chunk at a time.  It behaves as a
    list otherwise: ``len``, indexing, slicing (a plain list), ``+`` (a plain
    list) and comparison with lists.

    >>> handles = RemoteList([RemoteData("a", None), RemoteData("b", None)])
    >>> len(handles), handles[-1].key, [h.key for h in handles[:1]]
    (2, 'b', ['a'])
    """

    __slots__ = ("spans", "starts", "_len")

    def __init__(self, spans):
        self.spans = list(spans)  # RemoteData and ResultGroup (see Held), in input order
        starts, n = [], 0
        for span in self.spans:
            starts.append(n)
            n += span.size
        self.starts = starts  # the position of each span's first element
        self._len = n

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> RemoteData[T]: ...
    @overload
    def __getitem__(self, i: slice) -> list[RemoteData[T]]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        i = operator.index(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("RemoteList index out of range")
        k = bisect_right(self.starts, i) - 1
        span = self.spans[k]
        return span.handle(i - self.starts[k])

    def __iter__(self) -> Iterator[RemoteData[T]]:
        for span in self.spans:
            for i in range(span.size):
                yield span.handle(i)

    def __add__(self, other: Sequence[Any]) -> list[Any]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[Any]) -> list[Any]:
        return list(other) + list(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, RemoteList)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a list, unhashable as lists are

    def __repr__(self):
        return f"RemoteList<{self._len} results>"

    def __reduce__(self):
        raise TypeError(
            f"{self!r} cannot be pickled: pass it to pool.map/apply, which send its keys"
        )
