"""A function pickled by value, reused while nothing that its pickle holds has changed.

A function defined in a script, a notebook or IPython lives in ``__main__``, which
workers cannot import, so cloudpickle ships it by value: its code, and the globals,
defaults and closure values it uses.  That costs 20-120 us a call, more than the rest
of a ``submit`` or an ``apply``.  Ray pickles a remote function once, at its first
call, so a global rebound since then is silently stale on its workers; dask pickles
it again with every task.

Here the bytes are kept with a *witness*, taken before pickling: everything
cloudpickle reads from the function (its code, names, defaults, annotations, closure
values, and the globals its code names), held by identity.  They are reused only while
every item is still the same object, and only where every item is immutable: numbers,
strings, bytes, tuples and frozensets of them, and what pickles by reference
(importable modules, functions and classes -- for as long as their module still holds
them under their name and is not registered to pickle by value).  Another function of
``__main__`` that it calls is checked the same way, and a function that refers to a
module is pickled again once another module was imported (cloudpickle lists the
submodules it uses).  A mutable value -- a list, a dict, an array -- means pickling
every time, as before, and so does a pickle over ``KEEP_BYTES``, or anything the
witness cannot make sense of; for those the cache holds nothing, so it never keeps a
big global alive after the script dropped it::

    dumps(f) --> kept for f, witness still true?  yes --> the same bytes
                                                  no  --> witness, cloudpickle, keep

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
from itertools import repeat

try:  # cloudpickle's own answers to "which globals" and "by reference?", so ours agree
    from cloudpickle.cloudpickle import (_PICKLE_BY_VALUE_MODULES, _extract_code_globals,
                                         _should_pickle_by_reference)  # fmt: skip
except ImportError:  # another cloudpickle: nothing is kept, every call pickles anew
    _extract_code_globals = None

__all__ = ["keep", "keep_loaded", "loaded", "pickled", "reused", "witness"]

_EMPTY = object()  # the contents of an empty closure cell
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None), type(...), range})
_MODULE_NAMES = ("__package__", "__name__", "__path__", "__file__")  # pickled with it too
_EMPTIES = (_EMPTY,) * len(_MODULE_NAMES)
_DEEPEST = 20  # tuples nested deeper than this are not looked into: pickled each time
KEEP_BYTES = 1 << 16  # a bigger pickle is made anew each time, not kept
KEEP_LOADED = 256  # functions a worker keeps unpickled, see keep_loaded
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # func -> _Entry
_loaded: dict = {}  # pickle -> (function, _Entry or None), on a worker: see keep_loaded


class _Entry:
    """A function's witness: what it held when it was pickled, and the pickle."""

    __slots__ = ("data", "state", "calls", "refs", "modules", "by_value")

    def __init__(self, state, calls, refs, modules):
        self.data = None  # the pickle, once made
        self.state = state  # see _state; its functions as weak references
        self.calls = calls  # (weak reference, _Entry) of the other functions pickled by
        # value with it: checked too
        self.refs = refs  # weak references to what it pickles by reference (by name)
        self.modules = modules  # len(sys.modules) when it refers to a module, else None
        self.by_value = frozenset(_PICKLE_BY_VALUE_MODULES)  # cloudpickle's registrations


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
        before = witness(func)
        data = dumps(func)
        keep(func, data, before)
    return data


def reused(func):
    """The pickle of ``func`` that :func:`keep` kept, if it still holds; else None."""
    if type(func) is not types.FunctionType or _extract_code_globals is None:
        return None
    entry = _cache.get(func)
    if entry is None or not _holds(entry, _state(func)):
        return None
    return entry.data


def witness(func):
    """What ``func`` holds now, to take just *before* pickling it (a global rebound by
    another thread meanwhile then fails the witness, never the other way round); None
    where it cannot be kept: something mutable, or that the witness cannot check."""
    if type(func) is not types.FunctionType or _extract_code_globals is None:
        return None
    try:
        return _witness(func, _state(func))
    except Exception:  # an odd object (a lazy proxy, a deep nest): pickled each time
        return None


def keep(func, data, before):
    """Keep ``data``, the pickle of ``func`` made just after ``before`` (its
    :func:`witness`), for as long as that holds, if it is at most ``KEEP_BYTES`` long."""
    if type(func) is not types.FunctionType:
        return
    if before is None or len(data) > KEEP_BYTES:
        _cache.pop(func, None)
    else:
        before.data = data
        _cache[func] = before


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
    try:
        entry = _loaded_entry(func)
    except Exception:  # an odd object: unpickled each time
        return
    if entry is False:
        return
    if len(_loaded) >= KEEP_LOADED:
        _loaded.clear()
    _loaded[data] = (func, entry)


def _loaded_entry(func):
    """The witness under which a worker may reuse ``func``: None (by reference: as
    long as the bytes are the same), an entry, or False (never)."""
    kind = type(func)
    if kind is types.FunctionType and not _should_pickle_by_reference(func):
        entry = _witness(func, _state(func))
        return False if entry is None else entry
    if kind is types.BuiltinFunctionType:
        return None if _module_builtin(func) else False
    if (kind is types.FunctionType or isinstance(func, type)) and _should_pickle_by_reference(func):
        return None
    return False


def _state(func):
    """What cloudpickle pickles of ``func``, as a tuple of the objects themselves."""
    # in C where it can: this runs for every task, on the client and on the worker
    code = func.__code__
    get = func.__globals__.get
    closure = func.__closure__
    kwdefaults, annotations, attrs = func.__kwdefaults__, func.__annotations__, func.__dict__
    names = _extract_code_globals(code)
    return (
        code,
        func.__name__,
        func.__qualname__,
        func.__module__,
        func.__doc__,
        func.__defaults__,
        tuple(kwdefaults.items()) if kwdefaults else (),
        tuple(annotations.items()) if annotations else (),
        tuple(attrs.items()) if attrs else (),
        () if closure is None else tuple([_contents(c) for c in closure]),
        tuple(map(get, names, repeat(_EMPTY, len(names)))),
        tuple(map(get, _MODULE_NAMES, _EMPTIES)),
    )


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
    kept state never keeps a function alive -- a recursive closure names itself.  A
    tuple without functions is kept as it is: the same object compares at once."""
    kind = type(value)
    if kind is types.FunctionType:
        return weakref.ref(value)
    if kind is tuple and any(type(v) is types.FunctionType or type(v) is tuple for v in value):
        weak = tuple(map(_weak, value))
        return value if all(w is v for w, v in zip(weak, value)) else weak
    return value


def _holds(entry, state):
    """Whether the pickle of ``entry`` is still what pickling its function gives."""
    if not _same(entry.state, state):
        return False
    if entry.modules is not None and entry.modules != len(sys.modules):
        return False
    if (entry.by_value or _PICKLE_BY_VALUE_MODULES) and entry.by_value != _PICKLE_BY_VALUE_MODULES:
        return False  # a module registered to pickle by value, or no longer
    for ref in entry.refs:
        obj = ref()
        if obj is None or not _named(obj):
            return False
    for ref, inner in entry.calls:
        func = ref()
        if func is None or not _holds(inner, _state(func)):
            return False
    return True


def _witness(func, state):
    """The witness of ``func`` whose ``state`` that is; None unless every item of it is
    immutable."""
    found = {"calls": [], "refs": [], "modules": False, "seen": {func}}
    if not all(_stable(v, found, 0) for v in state[1:]):
        return None
    modules = len(sys.modules) if found["modules"] else None
    return _Entry(_weak(state), found["calls"], found["refs"], modules)


def _stable(value, found, depth):
    """Whether ``value`` pickles to the same bytes for as long as it is the same object;
    notes the functions of ``__main__`` it pickles by value, what it pickles by
    reference, and modules, in ``found``."""
    kind = type(value)
    if kind in _ATOMS or value is _EMPTY or kind is types.CodeType:
        return True
    if kind is tuple:
        return depth < _DEEPEST and all(_stable(v, found, depth + 1) for v in value)
    if kind is frozenset:  # kept whole: only plain values, no functions to hold weakly
        return all(_plain(v, depth + 1) for v in value)
    if kind is types.ModuleType:
        found["modules"] = True
        return _should_pickle_by_reference(value)
    if kind is types.BuiltinFunctionType:
        return _module_builtin(value)
    if isinstance(value, type):
        if _should_pickle_by_reference(value):
            found["refs"].append(weakref.ref(value))
            return True
        return False
    if kind is types.FunctionType:
        return _stable_function(value, found)
    return False


def _stable_function(func, found):
    if func in found["seen"]:  # recursion: checked already
        return True
    found["seen"].add(func)
    if _should_pickle_by_reference(func):
        found["refs"].append(weakref.ref(func))
        return True
    state = _state(func)
    inner = {"calls": [], "refs": found["refs"], "modules": False, "seen": found["seen"]}
    if not all(_stable(v, inner, 0) for v in state[1:]):
        return False
    found["modules"] |= inner["modules"]
    entry = _Entry(_weak(state), inner["calls"], [], None)
    found["calls"].append((weakref.ref(func), entry))
    return True


def _plain(value, depth):
    """Numbers, strings, bytes and tuples of them (not too deep)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    return kind is tuple and depth < _DEEPEST and all(_plain(v, depth + 1) for v in value)


def _named(obj):
    """Whether ``obj`` (pickled by reference) is still what its module holds under its
    name: a module reloaded (IPython's autoreload) holds a new one, and cloudpickle
    then ships the old one by value."""
    target = sys.modules.get(obj.__module__)
    for part in obj.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is obj


def _module_builtin(func):
    """Whether the builtin ``func`` is a module's (``len``, ``math.sqrt``), pickled by
    name -- not a method bound to an object (``a_list.append``), pickled with it."""
    owner = func.__self__
    return owner is None or type(owner) is types.ModuleType
