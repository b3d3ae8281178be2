"""Running user code in a worker's threads: chunks, seeds, stateful calls, tracebacks.

Everything here runs in the worker's thread pool, never on its event loop.
A task's exception is returned, not raised, so one failing element of a chunk
does not cost the others their results.

>>> from distributed3.protocol import dumps_function
>>> run_chunk(dumps_function(lambda x: 10 // x), [(1,), (0,)], None, None)[0]
(True, 10)
"""
import random
import sys
import threading
import traceback

from .exceptions import TaskError
from .protocol import loads_function, sizeof, small_pickle

__all__ = ["run_chunk", "run_guarded", "chunk_reply", "lone_reply", "stateful_call",
           "format_task_traceback"]

INLINE_BYTES = 4096  # results this small also travel in the task's reply

_seed_lock = threading.Lock()


def stateful_call(instance, args, kwargs):
    return instance.run(*args, **kwargs)


def run_chunk(function, args_list, kwargs, seeds):
    """Run in a worker thread: ``[(True, result) or (False, exception)]`` per element."""
    try:
        func = function if callable(function) else loads_function(function)
    except ImportError as e:
        err = ImportError(
            f"the task's function cannot be loaded here: {e}. Define it in a module the "
            "workers can import, or in the script itself (__main__), which travels by value"
        )
        err.__cause__ = e
        return [(False, err)] * len(args_list)
    except Exception as e:
        return [(False, e)] * len(args_list)
    kwargs = kwargs or {}
    out = []
    for i, args in enumerate(args_list):
        try:
            if seeds is None:  # called here, not through _run_task: a frame less per task
                out.append((True, func(*args, **kwargs)))
            else:
                with _seed_lock:  # the random modules' state is per process
                    _seed(seeds[i])
                    out.append((True, _run_task(func, args, kwargs)))
        except Exception as e:
            out.append((False, e))
        except BaseException as e:  # sys.exit() in a task: that task fails, not the worker
            out.append((False, _as_task_error(e)))
    return out


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


def chunk_reply(outcomes, duration, whole=False):
    """What a worker's ``compute_chunk`` answers for ``run_chunk``'s ``outcomes``.

    Small results travel pickled, one by one -- or, ``whole``, all together in one
    pickle when each is small (failed ones as ``None``).

    >>> chunk_reply([(True, 5)], 0.1)["nbytes"]
    [28]
    >>> import pickle; pickle.loads(chunk_reply([(True, 5), (True, 6)], 0.1, whole=True)["pickled"])
    [5, 6]
    """
    sizes, pickled, errors = [], [], {}
    small = True
    for i, (ok, value) in enumerate(outcomes):
        if ok:
            n = sizeof(value)
            sizes.append(n)
            if whole:
                small = small and n <= INLINE_BYTES
            else:
                pickled.append(small_pickle(value, INLINE_BYTES) if n <= INLINE_BYTES else None)
        else:
            sizes.append(None)
            pickled.append(None)
            errors[i] = {"exception": value, "traceback": format_task_traceback(value)}
    if whole:
        values = [value if ok else None for ok, value in outcomes]
        pickled = small_pickle(values, INLINE_BYTES * len(values)) if small else None
    return {"nbytes": sizes, "pickled": pickled, "errors": errors, "duration": duration}


def lone_reply(key, reply, outcomes):
    """What a worker's ``compute`` answers: :func:`chunk_reply` of one task, flat.

    >>> lone_reply("k", chunk_reply([(True, 5)], 0.1), [(True, 5)])["type"]
    'int'
    """
    if reply["errors"]:
        return {"key": key, **reply["errors"][0]}
    out = {"key": key, "nbytes": reply["nbytes"][0], "type": type(outcomes[0][1]).__name__}
    if reply["pickled"][0] is not None:
        out["pickled"] = reply["pickled"][0]
    return out
