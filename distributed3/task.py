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
from types import MappingProxyType


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


def extract_keys(obj, handle_type):
    """``obj`` with every ``handle_type`` instance replaced by a ``KeyRef``, and ``{key: handle}``.

    Containers without handles are returned as they are, not copied.

    >>> data = [1, 2, 3]
    >>> extract_keys(data, type(None))[0] is data
    True
    """
    handles = {}
    return _extract(obj, handle_type, handles), handles or _NONE


_NONE = MappingProxyType({})  # shared by the many argument lists without handles


_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def _extract(obj, handle_type, handles):
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
        new = [_extract(o, handle_type, handles) for o in obj]
        if all(a is b for a, b in zip(new, obj)):
            return obj
        return new if typ is list else tuple(new)
    if typ is dict:
        new = {k: _extract(v, handle_type, handles) for k, v in obj.items()}
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
