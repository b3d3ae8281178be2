"""Serialization: Python objects to a list of frames and back, without copying arrays.

``dumps(obj)`` returns ``[header, buffer, buffer, ...]``: the header is a pickle
(protocol 5) and every large contiguous buffer inside the object -- a numpy
array's memory, a ``bytes`` payload wrapped in ``pickle.PickleBuffer`` -- is
handed out of band as its own frame, so it travels without being copied into
the pickle.  ``loads(frames)`` rebuilds the object over those buffers.

Plain ``pickle`` is tried first because it is fastest; ``cloudpickle`` takes
over for what pickle cannot do by reference (lambdas, closures, anything
defined in ``__main__``), so functions typed into IPython travel too.

>>> import numpy as np
>>> frames = dumps({"x": np.arange(1000), "f": lambda y: y + 1})
>>> len(frames)               # header + the array's memory
2
>>> out = loads(frames)
>>> int(out["x"].sum()), out["f"](1)
(499500, 2)
"""
import io
import itertools
import pickle
import sys
import threading
from typing import Any

from .codeship import cloudpickle_dumps
from .funcbytes import keep, keep_loaded, loaded, reused, witness

__all__ = ["dumps", "loads", "dumps_function", "loads_function", "sizeof", "small_pickle"]


def dumps(obj):
    """Serialize ``obj`` into a list of frames (header first, then raw buffers).

    Plain pickle, unless something in ``obj`` is defined in ``__main__`` (which a peer
    cannot import) or plain pickle cannot take it: then cloudpickle, by value.

    >>> dumps([1, 2])[0][:1] == pickle.dumps([1, 2], protocol=5)[:1]
    True
    """
    try:
        header, buffers = _by_reference(obj)
        return [header, *map(_raw, buffers)]
    except Exception:
        pass
    out_of_band = _OutOfBand()
    header = cloudpickle_dumps(obj, buffer_callback=out_of_band.take)
    return [header, *map(_raw, out_of_band.buffers)]


IN_BAND_BYTES = 1024  # buffers smaller than this go in the pickle: a frame costs more


class _OutOfBand:
    """A pickler's ``buffer_callback`` (:meth:`take`): big buffers into ``buffers``, each
    to be a frame of its own; small ones left in the pickle (see :func:`_in_band`).  It
    holds no reference to its pickler: a pickler whose callback is its own bound method
    is a reference cycle, which keeps what it pickled alive (its memo) until the cyclic
    collector runs -- a worker's spilled results stayed in memory that way.

    >>> import numpy as np
    >>> frames = dumps([np.zeros(10), np.zeros(1000)])
    >>> len(frames), [f.nbytes for f in frames[1:]]
    (2, [8000])
    """

    __slots__ = ("buffers",)

    def __init__(self):
        self.buffers = []

    def take(self, buf):
        if _in_band(buf):
            return True
        self.buffers.append(buf)
        return False


def _in_band(buf):
    """Whether the ``PickleBuffer`` ``buf`` is better copied into the pickle: a small one
    costs less there than as a frame, and a value of 100,000 small arrays is then one
    frame, not 100,000 (more than a peer accepts, see ``Limits.max_frames``)."""
    with memoryview(buf) as view:
        return view.nbytes < IN_BAND_BYTES and view.contiguous


class _ByValue(Exception):
    """Something in the object is defined in ``__main__``: the peer cannot import it."""


class _MainChecker(pickle.Pickler):
    """A plain pickler that refuses anything that ``__main__`` defines.  Plain data
    (numbers, strings, bytes, lists, dicts...) never reaches ``reducer_override``, so
    it costs nothing there; it is kept per thread, for the same reason."""

    def __init__(self):
        self.out = io.BytesIO()
        self.out_of_band = _OutOfBand()  # not a method of ours: no reference cycle
        super().__init__(self.out, protocol=5, buffer_callback=self.out_of_band.take)

    def reducer_override(self, obj):
        if isinstance(obj, type) or callable(obj):
            module = getattr(obj, "__module__", None)
        else:
            module = getattr(type(obj), "__module__", None)
        if module == "__main__":
            raise _ByValue
        return NotImplemented


_local = threading.local()
_REUSE_BELOW = 2048  # pickled bytes: a checker that wrote a bigger message is not kept


def _by_reference(obj):
    """``(header, buffers)`` of ``obj`` by plain pickle; raises if anything in it comes
    from ``__main__`` -- a pickled function's bytes may name it, and are fine.

    >>> pickle.loads(_by_reference({"f": b"__main__"})[0])
    {'f': b'__main__'}
    """
    # taken while in use: a dumps inside a dumps (from some __reduce__) gets its own
    checker = _local.__dict__.pop("checker", None) or _MainChecker()
    checker.dump(obj)  # on error it is dropped: a failed dump may leave it half-written
    header, buffers = checker.out.getvalue(), checker.out_of_band.buffers
    if len(header) <= _REUSE_BELOW:  # else dropped too: its memo table has grown, and
        checker.out.seek(0)  # clearing costs as much as the table is big, however empty
        checker.out.truncate()
        checker.out_of_band.buffers = []
        checker.clear_memo()
        _local.checker = checker
    return header, buffers


def loads(frames):
    """Rebuild the object that :func:`dumps` turned into ``frames``.

    >>> loads(dumps({"a": b"bytes"}))
    {'a': b'bytes'}
    """
    return pickle.loads(frames[0], buffers=frames[1:])


def _raw(buf):
    try:
        return buf.raw()
    except BufferError:  # not contiguous: copy once rather than fail
        return memoryview(bytes(buf))


def dumps_function(func):
    """Serialize a function once so that a map can send the same bytes per task.

    >>> loads_function(dumps_function(lambda x: x * 2))(21)
    42
    """
    result = reused(func)  # pickled by value before, and nothing it holds changed
    if result is not None:
        return result
    try:
        result = pickle.dumps(func, protocol=5)
        if b"__main__" not in result:
            return result
    except Exception:
        pass
    before = witness(func)  # before pickling: a global rebound meanwhile fails it
    result = cloudpickle_dumps(func)
    keep(func, result, before)
    return result


def small_pickle(obj, limit):
    """``obj`` pickled by plain pickle if that works in at most ``limit`` bytes, else None.

    >>> small_pickle(42, 100) == pickle.dumps(42, protocol=5)
    True
    >>> small_pickle(b"x" * 200, 100) is None, small_pickle(lambda: 0, 100) is None
    (True, True)
    """
    try:
        data = pickle.dumps(obj, protocol=5)
    except Exception:
        return None
    return data if len(data) <= limit else None


def loads_function(data):
    """Deserialize a function from :func:`dumps_function`; the bytes of one seen before
    give the function they gave then, where that is the same as unpickling them again
    (see :func:`~.funcbytes.keep_loaded`).

    >>> data = dumps_function(len)
    >>> loads_function(data) is loads_function(data)
    True
    """
    func = loaded(data)
    if func is None:
        func = pickle.loads(data)
        keep_loaded(data, func)
    return func


_SAMPLE = 100
_ATOMS = frozenset({int, float, bool, complex, str, type(None)})


def sizeof(obj):
    """Approximate bytes held by ``obj``: exact for arrays and bytes, shallow otherwise.

    >>> import numpy as np
    >>> sizeof(np.zeros(1000, dtype="f8"))
    8000
    >>> sizeof(b"abc")
    3
    >>> sizeof([b"x" * 100] * 10_000) > 1_000_000     # sampled, then scaled
    True
    """
    if type(obj) in _ATOMS:  # the usual small results: no attribute look-ups
        return sys.getsizeof(obj)
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj) if not isinstance(obj, memoryview) else obj.nbytes
    if isinstance(obj, (list, tuple, set, frozenset, dict)):
        items = obj.items() if isinstance(obj, dict) else obj
        sample = list(itertools.islice(items, _SAMPLE))
        inner = sum(sizeof(k) + sizeof(v) for k, v in sample) if isinstance(obj, dict) else sum(
            map(sizeof, sample)
        )
        if len(obj) > len(sample):  # long containers: extrapolate from the first items
            inner = inner * len(obj) // len(sample)
        return sys.getsizeof(obj) + inner
    try:
        return sys.getsizeof(obj)
    except Exception:
        return 64
