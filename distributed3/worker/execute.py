"""Running user code in a worker's threads: chunks, seeds, stateful calls, tracebacks.

Everything here runs in the worker's thread pool, never on its event loop.
A task's exception is returned, not raised, so one failing element of a chunk
does not cost the others their results.

>>> from distributed3.core.protocol import dumps_function
>>> values, errors = run_chunk(dumps_function(lambda x: 10 // x), [(1,), (0,)], None, None)
>>> values, errors
([10, None], {1: ZeroDivisionError('integer division or modulo by zero')})
"""
import random
import sys
import threading
import traceback
from itertools import chain

from ..core.protocol import dumps, loads, loads_function, sizeof, small_pickle
from ..exceptions import TaskError

__all__ = ["run_chunk", "run_guarded", "chunk_reply", "lone_reply", "stateful_call",
           "format_task_traceback"]

INLINE_BYTES = 4096  # results this small also travel in the task's reply

_seed_lock = threading.Lock()


def stateful_call(instance, args, kwargs):
    return instance.run(*args, **kwargs)


def run_chunk(function, args_list, kwargs, seeds, spread=True, share=None):
    """Run in a worker thread: ``(values, errors)`` -- a result per element (``None``
    where it failed) and ``{position: exception}``.  Element ``i`` is
    ``function(*args_list[i], **kwargs)``, or with ``spread=False``
    ``function(args_list[i], **kwargs)``.  With a :class:`~.split.Share`, the elements
    are claimed a block at a time, and the chunk stops where the share was split: the
    values are then fewer than the arguments.

    >>> run_chunk(len, ["ab", "abc"], None, None, spread=False)
    ([2, 3], {})
    """
    n = len(args_list)
    try:
        func = function if callable(function) else loads_function(function)
    except ImportError as e:
        err = ImportError(
            f"the task's function cannot be loaded here: {e}. Define it in a module the "
            "workers can import, or in the script itself (__main__), which travels by value"
        )
        err.__cause__ = e
        return _all_failed(n if share is None else share.take_all(), err)
    except Exception as e:
        return _all_failed(n if share is None else share.take_all(), e)
    kwargs = kwargs or {}
    values, errors = [], {}
    while True:  # resumed after each block and each failed element: no task runs twice
        i = len(values)
        if share is not None:
            block = share.claim(i, args_list, values)
            if not block:
                break
        elif i < n:
            block = args_list[i:] if i else args_list
        else:
            break
        try:
            # called here, not through a helper: a frame less
            if seeds is not None:
                for args in block:
                    with _seed_lock:  # the random modules' state is per process
                        _seed(seeds[len(values)])
                        values.append(_run_task(func, args if spread else (args,), kwargs))
            elif spread:
                for args in block:
                    values.append(func(*args, **kwargs))
            elif kwargs:
                for arg in block:
                    values.append(func(arg, **kwargs))
            else:
                for arg in block:
                    values.append(func(arg))
            continue
        except Exception as e:
            errors[len(values)] = e
        except BaseException as e:  # sys.exit() in a task: that task fails, not the worker
            errors[len(values)] = _as_task_error(e)
        values.append(None)
    return values, errors


def _all_failed(n, error):
    """``(values, errors)`` of ``n`` elements that all failed with ``error``."""
    return [None] * n, dict.fromkeys(range(n), error)


def run_guarded(fn, *args):
    """``fn(*args)`` in a worker thread, where a ``sys.exit()`` fails this call only.

    >>> run_guarded(sum, [1, 2])
    3
    """
    try:
        return fn(*args)
    except Exception:
        raise
    except BaseException as e:
        raise _as_task_error(e) from None


def _as_task_error(e):
    """``SystemExit`` and kin from user code, as the error of that call alone."""
    err = TaskError(f"the task raised {e!r}, which would have ended the worker")
    return err.with_traceback(e.__traceback__)


def _seed(seed):
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed % 2**32)


def _run_task(func, args, kwargs):
    return func(*args, **kwargs)


def format_task_traceback(exc):
    """The traceback of a failed task without the worker's own frames."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    ours = {_run_task.__code__, run_chunk.__code__}
    start = max((i + 1 for i, t in enumerate(frames) if t.tb_frame.f_code in ours), default=0)
    # raised in our own frame (a builtin like int called as the task): no user frames
    tb = frames[start] if start < len(frames) else None
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines)


def portable(exc):
    """``exc`` if it comes out of pickle as itself, else a ``TaskError`` with its type and
    text: an exception class whose ``__init__`` wants other arguments than its ``args``,
    or one holding a lock, would fail the whole reply on the way.

    >>> class Picky(Exception):
    ...     def __init__(self, a, b):
    ...         super().__init__(f"{a} and {b}")
    >>> portable(ValueError("x"))
    ValueError('x')
    >>> print(portable(Picky(1, 2)))  # doctest: +NORMALIZE_WHITESPACE
    Picky: 1 and 2 (the exception could not travel as itself: TypeError:
    Picky.__init__() missing 1 required positional argument: 'b')
    """
    try:
        loads(dumps(exc))  # as the reply will carry it
        return exc
    except Exception as e:
        return TaskError(f"{type(exc).__name__}: {exc} (the exception could not travel as "
                         f"itself: {type(e).__name__}: {e})")


def chunk_reply(values, errors, duration, whole=False):
    """What a worker's ``compute_chunk`` answers for ``run_chunk``'s ``(values, errors)``.

    Small results travel pickled, one by one -- or, ``whole``, all together in one
    pickle when each is small (failed ones as ``None``); ``nbytes`` is then the size of
    that pickle, for the whole chunk, rather than a list.

    >>> chunk_reply([5], {}, 0.1)["nbytes"]
    [28]
    >>> import pickle; pickle.loads(chunk_reply([5, 6], {}, 0.1, whole=True)["pickled"])
    [5, 6]
    """
    failed = {i: failure(e) for i, e in errors.items()}
    run = scalar_run(values) if whole and not errors else None
    if run is not None:  # numpy scalars of one type: one array on the wire
        pickled = small_pickle(run, INLINE_BYTES * len(values))
        if pickled is not None:
            return {"nbytes": len(pickled), "pickled": pickled, "errors": failed,
                    "duration": duration}  # fmt: skip
    if whole and _all_small(values):
        pickled = small_pickle(values, INLINE_BYTES * len(values))
        if pickled is not None:
            return {"nbytes": len(pickled), "pickled": pickled, "errors": failed,
                    "duration": duration}  # fmt: skip
    sizes = [None if i in errors else sizeof(v) for i, v in enumerate(values)]
    if whole:
        pickled = None
    else:
        pickled = [inline(v, n) for v, n in zip(values, sizes)]
    return {"nbytes": sizes, "pickled": pickled, "errors": failed, "duration": duration}


class ScalarRun:
    """Numpy scalars of one type, pickled as one array and unpickled as the list of them
    (``list(array)``): a chunk's numeric results in one buffer, not a pickle each.

    >>> import numpy as np, pickle
    >>> values = [np.float64(1.5), np.float64(2.5)]
    >>> back = pickle.loads(pickle.dumps(scalar_run(values)))
    >>> back == values, type(back[0]).__name__
    (True, 'float64')
    >>> scalar_run([1, 2]) is None, scalar_run([np.float64(1), np.int64(1)]) is None
    (True, True)
    """

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __reduce__(self):
        return (list, (self.array,))


def scalar_run(values):
    """A :class:`ScalarRun` of ``values`` when they are numpy numbers of one type, else
    ``None``."""
    numpy = sys.modules.get("numpy")
    if numpy is None or not values:
        return None
    types = set(map(type, values))
    if len(types) != 1:
        return None
    (typ,) = types
    if not issubclass(typ, numpy.generic) or numpy.dtype(typ).kind not in "biufc":
        return None
    return ScalarRun(numpy.array(values, dtype=typ))


_TINY = frozenset({int, float, bool, complex, type(None)})
_SHORT = 48  # a tuple of so many numbers of at most 64 bytes is below INLINE_BYTES


def _all_small(values):
    """Whether no result is over ``INLINE_BYTES``: by type, in passes that run in C, for
    the usual results (numbers, and short tuples of them); else one by one.

    >>> _all_small([1, (2.5, None), None]), _all_small([1, (0,) * 1000])
    (True, False)
    >>> _all_small([10 ** 20000]), _all_small([(10 ** 20000,)])
    (False, False)
    """
    types = set(map(type, values))
    if types <= _TINY:
        return _small_numbers(values, types, INLINE_BYTES)
    if types <= _TINY | {tuple}:
        tuples = [v for v in values if type(v) is tuple]
        if max(map(len, tuples)) <= _SHORT:
            inside = list(chain.from_iterable(tuples))
            inner = set(map(type, inside))
            if inner <= _TINY and _small_numbers(inside, inner, 64):
                return _small_numbers(values, types, INLINE_BYTES)
    return all(sizeof(v) <= INLINE_BYTES for v in values)


def _small_numbers(numbers, types, limit):
    """Whether none of ``numbers`` (of ``types``) takes much over ``limit`` bytes: of the
    types in ``_TINY``, only ``int`` has no bound."""
    if int not in types:
        return True
    ints = numbers if len(types) == 1 else [v for v in numbers if type(v) is int]
    return max(map(int.bit_length, ints)) <= 8 * limit


def lone_reply(key, values, errors, duration):
    """What a worker's ``compute`` answers for one task's ``run_chunk`` result: as
    :func:`chunk_reply` would, flat, and made without its lists.

    >>> lone_reply("k", [5], {}, 0.1)
    {'key': 'k', 'nbytes': 28, 'type': 'int', 'duration': 0.1, 'pickled': b'\\x80\\x05K\\x05.'}
    """
    if errors:
        return {"key": key, **failure(errors[0]), "duration": duration}
    value = values[0]
    nbytes = sizeof(value)
    out = {"key": key, "nbytes": nbytes, "type": type(value).__name__, "duration": duration}
    pickled = inline(value, nbytes)
    if pickled is not None:
        out["pickled"] = pickled
    return out


def failure(error):
    """A failed task's entry in a reply: its exception (as it can travel) and traceback."""
    return {"exception": portable(error), "traceback": format_task_traceback(error)}


def inline(value, nbytes):
    """``value`` pickled to travel with its reply, if it is small (``nbytes``, ``None``
    for a failed task's); else None."""
    if nbytes is None or nbytes > INLINE_BYTES:
        return None
    return small_pickle(value, INLINE_BYTES)
