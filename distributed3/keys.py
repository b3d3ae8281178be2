"""References to remote data inside task arguments, and their substitution.

The client replaces each handle in a task's arguments by a ``KeyRef`` and
lists the keys; the worker swaps each ``KeyRef`` for the value it holds or
fetched.  Lists, tuples and dicts are searched, nested to any depth.

>>> class Handle:
...     def __init__(self, key): self.key = key
>>> args, handles = extract_keys((1, [Handle("x"), {"y": Handle("y")}]), Handle)
>>> args
(1, [KeyRef('x'), {'y': KeyRef('y')}])
>>> sorted(handles)
['x', 'y']
>>> substitute(args, {"x": 10, "y": 20})
(1, [10, {'y': 20}])
"""
import sys
from itertools import chain
from types import MappingProxyType
from typing import Any

ELEMENT = "#"  # "G#3": element 3 of the results a chunk keeps under key "G"


class Parts(list):
    """The results of one chunk of a map, kept by a worker as one entry under the chunk's
    key; element ``i`` is addressed as ``element_key(chunk_key, i)``.  ``gone`` holds the
    positions that failed (their errors went back with the reply) or were deleted on
    their own: they hold ``None``, and are held by nobody.

    >>> parts = Parts([None, 2], gone={0})
    >>> element_of({"g": parts}, "g#0", "missing"), parts.drop(1), parts
    ('missing', True, [None, None])
    """

    __slots__ = ("gone",)

    def __init__(self, values=(), gone=()):
        super().__init__(values)
        self.gone = set(gone)

    def drop(self, index):
        """Forget element ``index``; whether it was held."""
        if index in self.gone or not 0 <= index < len(self):
            return False
        self[index] = None
        self.gone.add(index)
        return True


def element_key(group, index):
    """The key of element ``index`` of the chunk results kept under ``group``.

    >>> element_key("inc-ab12-7", 3)
    'inc-ab12-7#3'
    """
    return f"{group}{ELEMENT}{index}"


def split_element(key):
    """``(group, index)`` for an element key, ``None`` for any other key.

    >>> split_element("inc-ab12-7#3"), split_element("x"), split_element(("a", 1))
    (('inc-ab12-7', 3), None, None)
    """
    if type(key) is not str or ELEMENT not in key:
        return None
    group, _, index = key.rpartition(ELEMENT)
    return (group, int(index)) if index.isdigit() else None


def element_of(data, key, missing=None):
    """The value held for ``key`` in ``data``, an element key resolved through its chunk.

    >>> data = {"g": Parts([10, 20]), "x": 1}
    >>> element_of(data, "g#1"), element_of(data, "x"), element_of(data, "g#5", "?")
    (20, 1, '?')
    """
    value = data.get(key, missing)
    if value is missing:
        found = split_element(key)
        if found is not None:
            parts = data.get(found[0])
            index = found[1]
            if type(parts) is Parts and index < len(parts) and index not in parts.gone:
                return parts[index]
    return value


class KeyRef:
    """Stands for the value of ``key`` until the worker substitutes it."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __repr__(self):
        return f"KeyRef({self.key!r})"

    def __eq__(self, other):
        return isinstance(other, KeyRef) and other.key == self.key

    def __hash__(self):
        return hash(("KeyRef", self.key))

    def __reduce__(self):
        return (KeyRef, (self.key,))


def extract_keys(obj, handle_type, listlike=()):
    """``obj`` with every ``handle_type`` instance replaced by a ``KeyRef``, and ``{key: handle}``.

    Containers without handles are returned as they are, not copied; instances of
    ``listlike`` (sequences of handles) become lists.

    >>> data = [1, 2, 3]
    >>> extract_keys(data, type(None))[0] is data
    True
    >>> extract_keys((range(2),), type(None), listlike=range)[0]
    ([0, 1],)
    """
    handles = {}
    return _extract(obj, handle_type, handles, listlike), handles or _NONE


_NONE: MappingProxyType[str, Any] = MappingProxyType({})  # shared by the many argument lists without handles


_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def plain_arguments(arglists, single=False):
    """Whether every argument tuple (with ``single``, every argument, or tuple of them)
    holds only numbers, strings, bytes, ``None`` and numpy scalars: then no handle
    hides in them (a quick check, by type, before :func:`extract_keys`).

    >>> plain_arguments([(1, "a"), (2.5, None)]), plain_arguments([([1],)])
    (True, False)
    >>> import numpy as np
    >>> plain_arguments([1, "a", None, (2, np.float32(3))], single=True)
    True
    >>> plain_arguments(np.arange(10), single=True)  # an array of numbers, as it is
    True
    """
    if single and numeric_array(arglists):
        return True
    types = set(map(type, arglists))  # by type, in passes that run in C
    if not single:
        if not types <= {tuple}:
            return False
        types = set(map(type, chain.from_iterable(arglists)))
    elif tuple in types:
        types.discard(tuple)
        tuples = [args for args in arglists if type(args) is tuple] if types else arglists
        types.update(map(type, chain.from_iterable(tuples)))
    return types <= _PLAIN or all(map(_plain_type, types))


def numeric_array(obj):
    """Whether ``obj`` is a numpy array of numbers (no object that could be a handle
    inside): a map over it can send slices of it, not one pickled scalar per element.

    >>> import numpy as np
    >>> numeric_array(np.arange(3)), numeric_array(np.array([None])), numeric_array([1])
    (True, False, False)
    """
    numpy = sys.modules.get("numpy")  # imported by whoever made such an array
    return (numpy is not None and isinstance(obj, numpy.ndarray) and obj.ndim >= 1
            and obj.dtype.kind in "biufcmMSU")  # fmt: skip


def _plain_type(typ):
    if typ in _PLAIN:
        return True
    numpy = sys.modules.get("numpy")  # imported by whoever made such a scalar
    return numpy is not None and issubclass(typ, numpy.generic)


def _extract(obj, handle_type, handles, listlike):
    typ = type(obj)
    if typ in _PLAIN:
        return obj
    if isinstance(obj, handle_type):
        handles[obj.key] = obj
        return KeyRef(obj.key)
    if typ in (list, tuple):
        for o in obj:  # the usual arguments hold plain values only: nothing to copy
            if type(o) not in _PLAIN:
                break
        else:
            return obj
        new = [_extract(o, handle_type, handles, listlike) for o in obj]
        if all(a is b for a, b in zip(new, obj)):
            return obj
        return new if typ is list else tuple(new)
    if listlike and isinstance(obj, listlike):
        return [_extract(o, handle_type, handles, listlike) for o in obj]
    if typ is dict:
        new = {k: _extract(v, handle_type, handles, listlike) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        return new
    return obj


def substitute(obj, values):
    """``obj`` with every ``KeyRef`` replaced by ``values[key]``.

    >>> substitute({"a": [KeyRef("x")]}, {"x": 1})
    {'a': [1]}
    """
    typ = type(obj)
    if typ is KeyRef:
        return values[obj.key]
    if typ is list:
        return [substitute(o, values) for o in obj]
    if typ is tuple:
        return tuple(substitute(o, values) for o in obj)
    if typ is dict:
        return {k: substitute(v, values) for k, v in obj.items()}
    return obj
