"""Functions pickled by value keep their file name and source lines, for remote tracebacks.

cloudpickle (since 3.1) renames the file of every code object it ships to
``<dynamic-code>``, so a traceback raised on a worker from a lambda or a function
typed into IPython would say ``File "<dynamic-code>", line 7`` and show no code.
:func:`cloudpickle_dumps` ships code objects whole (``marshal``, the format Python
itself caches them in) together with the source lines they span; loading puts
those lines where ``linecache`` -- and so ``traceback`` -- finds them, unless the
file is there to read.

>>> import pickle
>>> f = pickle.loads(cloudpickle_dumps(lambda x: 1 / x))
>>> f.__code__.co_filename.startswith("<doctest")   # not "<dynamic-code>"
True
"""
import io
import linecache
import marshal
import os
import types
from collections import ChainMap

import cloudpickle

__all__ = ["cloudpickle_dumps"]


def _reduce_code(code):
    lines = linecache.getlines(code.co_filename)
    numbers = [n for _, _, n in code.co_lines() if n]
    first = min(numbers, default=code.co_firstlineno)
    last = max(numbers, default=first)
    for const in code.co_consts:  # nested functions, comprehensions
        if isinstance(const, types.CodeType):
            last = max([last, *(n for _, _, n in const.co_lines() if n)])
    span = lines[first - 1 : last] if lines else []
    return _load_code, (marshal.dumps(code), code.co_filename, first, span)


def _load_code(data, filename, first, span):
    code = marshal.loads(data)
    if span and not os.path.exists(filename):
        _remember(filename, first, span)
    return code


def _remember(filename, first, span):
    """Put ``span`` (lines from ``first`` on) into linecache, merging with what is there."""
    entry = linecache.cache.get(filename)
    lines = list(entry[2]) if entry and entry[1] is None else []  # ours, or lazily added
    lines.extend(["\n"] * (first - 1 + len(span) - len(lines)))
    lines[first - 1 : first - 1 + len(span)] = span
    # mtime None: linecache.checkcache keeps the entry, as for source typed into IPython
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def cloudpickle_dumps(obj, buffer_callback=None):
    """``cloudpickle.dumps(obj, protocol=5)``, keeping code file names and source lines.

    >>> import pickle
    >>> pickle.loads(cloudpickle_dumps(lambda: 42))()
    42
    """
    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(obj)
    return out.getvalue()
