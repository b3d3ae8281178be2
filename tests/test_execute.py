"""Running user code on a worker: chunks that go on past a failure, seeds, tracebacks
without the worker's frames, ``sys.exit``, functions from modules the workers lack,
tasks that run their own event loop, replies that carry small results."""
import pickle
import random

import numpy as np
import pytest

from distributed3 import Pool, TaskError
from distributed3.core.protocol import dumps_function
from distributed3.core.server import ConnectionPool
from distributed3.testing import cluster, gen_test
from distributed3.worker.execute import (
    INLINE_BYTES,
    chunk_reply,
    format_task_traceback,
    lone_reply,
    run_chunk,
)


def test_error_raised_by_a_builtin_task_shows_no_worker_frames(pool):
    [bad] = pool.map(int, ["abc"])
    with pytest.raises(ValueError, match="invalid literal") as info:
        bad.get()
    text = str(info.value.__cause__)
    assert "invalid literal for int()" in text
    assert "execute.py" not in text and "_run_task" not in text


def _leave(code):
    raise SystemExit(code)


def test_a_task_calling_sys_exit_fails_alone(pool):
    with pytest.raises(TaskError, match=r"SystemExit\(3\)"):
        pool.apply(_leave, (3,)).get()
    assert pool.apply(lambda: 42).get() == 42  # the worker, and the caller, carry on


def test_function_from_a_module_workers_cannot_import():
    import sys
    import types

    module = types.ModuleType("only_in_this_process")

    def helper(x):
        return x

    helper.__module__ = module.__name__
    helper.__qualname__ = "helper"
    module.helper = helper
    sys.modules[module.__name__] = module
    try:
        with Pool(n_workers=1) as pool:  # a real worker process, without that module
            out = pool.apply(helper, (1,))
            with pytest.raises(ImportError, match="only_in_this_process.*workers can import"):
                out.get()
    finally:
        del sys.modules[module.__name__]


def test_tasks_may_run_their_own_event_loop(pool):
    """Tasks run in worker threads, never on the worker's loop: a task may call
    asyncio.run, however often (and however quick) it is."""
    import asyncio

    def with_loop(x):
        async def double():
            return 2 * x

        return asyncio.run(double())

    assert [pool.apply(with_loop, (i,)).get() for i in range(6)] == [0, 2, 4, 6, 8, 10]
    assert pool.gather(pool.map(with_loop, range(100))) == [2 * i for i in range(100)]


class _ExitsOnInit:
    def __init__(self):
        raise SystemExit(3)


@gen_test(timeout=20)
async def test_a_stateful_instance_calling_sys_exit_fails_that_call_alone():
    async with cluster(1) as (center, [w]):
        pool = ConnectionPool()
        with pytest.raises(TaskError, match=r"SystemExit\(3\)"):
            await pool(w.address).stateful_init(name="s", cls=dumps_function(_ExitsOnInit))
        assert await pool(w.address).keys() == []  # still serving
        await pool.close()


def test_a_chunk_goes_on_past_a_failed_element_and_runs_none_twice():
    calls = []

    def record(x):
        calls.append(x)
        if x in (1, 3):
            raise ValueError(x)
        if x == 4:
            raise SystemExit(4)  # fails this element, not the thread that runs the chunk
        return -x

    values, errors = run_chunk(record, [(i,) for i in range(6)], None, None)
    assert calls == [0, 1, 2, 3, 4, 5]
    assert values == [0, None, -2, None, None, -5]
    assert {i: type(e) for i, e in errors.items()} == {1: ValueError, 3: ValueError, 4: TaskError}


def test_a_seeded_element_draws_the_same_whatever_chunk_it_is_in():
    def draw(x):
        return x, random.random(), float(np.random.rand())

    args, seeds = [(i,) for i in range(6)], [100 + i for i in range(6)]
    whole, _ = run_chunk(dumps_function(draw), args, None, seeds)
    halves = run_chunk(draw, args[:3], None, seeds[:3])[0] + run_chunk(draw, args[3:], None,
                                                                        seeds[3:])[0]  # fmt: skip
    assert whole == halves and len({v[1] for v in whole}) == 6


def test_a_task_traceback_starts_at_the_users_code():
    def user_code(x):
        return {}[x]

    _, errors = run_chunk(user_code, [("missing",)], None, None)
    text = format_task_traceback(errors[0])
    assert "in user_code" in text and "KeyError: 'missing'" in text
    assert "run_chunk" not in text and "worker/execute.py" not in text
    reply = chunk_reply([None], errors, 0.01)
    assert reply["errors"][0]["traceback"] == text and reply["errors"][0]["exception"] is errors[0]


def test_small_results_travel_with_the_reply_big_ones_stay():
    small, big = [1, 2, 3], np.zeros(INLINE_BYTES)  # 8 bytes an element
    reply = chunk_reply([small, big], {}, 0.01)
    assert pickle.loads(reply["pickled"][0]) == small and reply["pickled"][1] is None
    assert reply["nbytes"][1] == big.nbytes
    assert lone_reply("k", [big], {}, 0.01) == {
        "key": "k", "nbytes": big.nbytes, "type": "ndarray", "duration": 0.01}  # fmt: skip
