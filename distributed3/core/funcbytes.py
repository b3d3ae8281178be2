"""A function pickled by value, reused while nothing that its pickle holds has changed.

A function defined in a script, a notebook or IPython lives in ``__main__``, which
workers cannot import, so cloudpickle ships it by value: its code, and the globals,
defaults and closure values it uses.  That costs 20-120 us a call, more than the rest
of a ``submit`` or an ``apply``.  Ray pickles a remote function once, at its first
call, so a global rebound since then is silently stale on its workers; dask pickles
it again with every task.

Here the bytes are kept with a *witness*: everything cloudpickle reads from the
function (its code, names, defaults, annotations, closure values, and the globals its
code names), held by identity.  They are reused only while every item is still the
same object, and only where every item is immutable: numbers, strings, bytes, tuples
and frozensets of them, and what pickles by reference (importable modules, functions
and classes).  Another function of ``__main__`` that it calls is checked the same way,
and a function that refers to a module is pickled again once another module was
imported (cloudpickle lists the submodules it uses).  A mutable value -- a list, a
dict, an array -- means pickling every time, as before, and so does a pickle over
``KEEP_BYTES``; for those the cache holds nothing, so it never keeps a big global
alive after the script dropped it::

    dumps(f) --> cached for f, witness still true?  yes --> the same bytes
                                                    no  --> cloudpickle, keep if stable

>>> from cloudpickle import dumps
>>> G = 2
>>> def double(x):
...     return x * G
>>> data = pickled(double, dumps)
>>> pickled(double, dumps) is data       # nothing changed: the same bytes
True
>>> G = 3                                # a global rebound: pickled again
>>> pickled(double, dumps) is data
False
"""
import sys
import types
import weakref

try:  # cloudpickle's own answers to "which globals" and "by reference?", so ours agree
    from cloudpickle.cloudpickle import _extract_code_globals, _should_pickle_by_reference
except ImportError:  # another cloudpickle: nothing is kept, every call pickles anew
    _extract_code_globals = _should_pickle_by_reference = None

__all__ = ["keep", "keep_loaded", "loaded", "pickled", "reused"]

_EMPTY = object()  # the contents of an empty closure cell
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None), type(...), range})
_MODULE_NAMES = ("__package__", "__name__", "__path__", "__file__")  # pickled with it too
KEEP_BYTES = 1 << 16  # a bigger pickle is made anew each time, not kept
KEEP_LOADED = 256  # functions a worker keeps unpickled, see keep_loaded
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # func -> _Entry
_loaded: dict = {}  # pickle -> (function, _Entry or None), on a worker: see keep_loaded


class _Entry:
    __slots__ = ("data", "state", "calls", "modules")

    def __init__(self, data, state, calls, modules):
        self.data = data  # the pickle
        self.state = state  # see _state; its functions as weak references
        self.calls = calls  # (weak reference, _Entry) of the other functions pickled by
        # value with it: checked too
        self.modules = modules  # len(sys.modules) when it refers to a module, else None


def pickled(func, dumps):
    """``dumps(func)``, or the bytes it gave before if nothing it captures has changed
    since (see the module's docstring); only for a plain function pickled by value.

    >>> from cloudpickle import dumps
    >>> f = lambda: 1
    >>> pickled(f, dumps) is pickled(f, dumps)
    True
    """
    data = reused(func)
    if data is None:
        data = dumps(func)
        keep(func, data)
    return data


def reused(func):
    """The pickle of ``func`` that :func:`keep` kept, if it still holds; else None."""
    if type(func) is not types.FunctionType or _extract_code_globals is None:
        return None
    entry = _cache.get(func)
    if entry is None or not _holds(entry, _state(func)):
        return None
    return entry.data


def keep(func, data):
    """Keep ``data``, the pickle of ``func`` made now, for as long as it holds: only if
    all that it holds is immutable, and it is at most ``KEEP_BYTES`` long (nothing
    else is held: a big global the function used is not kept alive by this cache)."""
    if type(func) is not types.FunctionType or _extract_code_globals is None:
        return
    entry = None
    if len(data) <= KEEP_BYTES:
        entry = _witness(func, _state(func), data)
    if entry is None:
        _cache.pop(func, None)
    else:
        _cache[func] = entry


def loaded(data):
    """The function that :func:`keep_loaded` kept for the pickle ``data``, if it still
    stands for a new unpickling of ``data``; else None.

    >>> from cloudpickle import dumps, loads
    >>> data = dumps(lambda x: x + 1)
    >>> keep_loaded(data, loads(data))
    >>> loaded(data)(1)
    2
    """
    hit = _loaded.get(data)
    if hit is None:
        return None
    func, entry = hit
    if entry is not None and not _holds(entry, _state(func)):  # a task rebound a global
        _loaded.pop(data, None)
        return None
    return func


def keep_loaded(data, func):
    """On a worker: keep ``func``, just unpickled from ``data``, for the next task that
    brings the same bytes -- where unpickling them again would give the same function.

    That holds for what pickles by reference (a lookup in a module), and for a function
    pickled by value whose state is all immutable, for as long as it stays the same
    objects (a task may rebind a global of its own function).  Not for anything else:
    unpickling a class of the client's ``__main__`` again sets its attributes anew, and
    a global list comes back as it was sent, whatever tasks did to the last copy.  At
    most ``KEEP_LOADED`` pickles of at most ``KEEP_BYTES`` each are kept."""
    if len(data) > KEEP_BYTES or _extract_code_globals is None:
        return
    kind = type(func)
    if kind is types.FunctionType and not _should_pickle_by_reference(func):
        entry = _witness(func, _state(func), None)
        if entry is None:
            return
    elif (kind is types.BuiltinFunctionType and _module_builtin(func)
          or (kind is types.FunctionType or isinstance(func, type))
          and _should_pickle_by_reference(func)):  # fmt: skip
        entry = None
    else:
        return
    if len(_loaded) >= KEEP_LOADED:
        _loaded.clear()
    _loaded[data] = (func, entry)


def _state(func):
    """What cloudpickle pickles of ``func``, as a tuple of the objects themselves."""
    code = func.__code__
    globs = func.__globals__
    closure = func.__closure__
    return (
        code,
        func.__name__,
        func.__qualname__,
        func.__module__,
        func.__doc__,
        func.__defaults__,
        _items(func.__kwdefaults__),
        _items(func.__annotations__),
        _items(func.__dict__),
        () if closure is None else tuple(_contents(c) for c in closure),
        tuple(globs.get(name, _EMPTY) for name in _extract_code_globals(code)),
        tuple(globs.get(name, _EMPTY) for name in _MODULE_NAMES),
    )


def _items(d):
    return () if not d else tuple(d.items())


def _contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # not yet assigned
        return _EMPTY


def _same(stored, state):
    """Whether ``stored`` (a kept state, its functions held weakly) and ``state`` hold
    the same objects (tuples: item by item).

    >>> _same((1, ("x", None)), (1, ("x", None))), _same(([],), ([],))
    (True, False)
    """
    if len(stored) != len(state):
        return False
    for x, y in zip(stored, state):
        if x is y:
            continue
        kind = type(x)
        if kind is weakref.ref:
            if x() is not y:
                return False
        elif kind is not tuple or type(y) is not tuple or not _same(x, y):
            return False
    return True


def _weak(value):
    """``value`` to keep in a state: functions held weakly (in tuples too), so that a
    kept state never keeps a function alive -- a recursive closure names itself."""
    kind = type(value)
    if kind is types.FunctionType:
        return weakref.ref(value)
    if kind is tuple:
        return tuple(map(_weak, value))
    return value


def _holds(entry, state):
    """Whether the pickle of ``entry`` is still what pickling its function gives."""
    if not _same(entry.state, state):
        return False
    if entry.modules is not None and entry.modules != len(sys.modules):
        return False
    for ref, inner in entry.calls:
        func = ref()
        if func is None or not _holds(inner, _state(func)):
            return False
    return True


def _witness(func, state, data):
    """The cache entry of ``func`` holding ``data``; None unless every item of
    ``state`` is immutable."""
    found = {"calls": [], "modules": False, "seen": {func}}
    if not all(_stable(v, found) for v in state[1:]):
        return None
    modules = len(sys.modules) if found["modules"] else None
    return _Entry(data, _weak(state), found["calls"], modules)


def _stable(value, found):
    """Whether ``value`` pickles to the same bytes for as long as it is the same object;
    notes the functions of ``__main__`` it pickles by value, and modules, in ``found``."""
    kind = type(value)
    if kind in _ATOMS or value is _EMPTY:
        return True
    if kind is tuple:
        return all(_stable(v, found) for v in value)
    if kind is frozenset:  # kept whole, so no functions: they are held weakly
        return all(type(v) is not types.FunctionType and _stable(v, found) for v in value)
    if kind is types.CodeType:
        return True
    if kind is types.ModuleType:
        found["modules"] = True
        return _should_pickle_by_reference(value)
    if kind is types.BuiltinFunctionType:
        return _module_builtin(value)
    if isinstance(value, type):
        return _should_pickle_by_reference(value)
    if kind is types.FunctionType:
        if value in found["seen"]:  # recursion: checked already
            return True
        found["seen"].add(value)
        if _should_pickle_by_reference(value):
            return True
        state = _state(value)
        inner = {"calls": [], "modules": False, "seen": found["seen"]}
        if not all(_stable(v, inner) for v in state[1:]):
            return False
        found["modules"] |= inner["modules"]
        entry = _Entry(None, _weak(state), inner["calls"], None)
        found["calls"].append((weakref.ref(value), entry))
        return True
    return False


def _module_builtin(func):
    """Whether the builtin ``func`` is a module's (``len``, ``math.sqrt``), pickled by
    name -- not a method bound to an object (``a_list.append``), pickled with it."""
    owner = func.__self__
    return owner is None or type(owner) is types.ModuleType
