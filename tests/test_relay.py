"""A worker process's loop relayed between its task threads: the thread that reads a
lone task runs it, and a long one does not hold the loop up."""
import asyncio
import os
import threading
import time

import pytest

from distributed3 import Pool
from distributed3.core.channel import pack
from distributed3.core.protocol import dumps_function
from distributed3.worker import relay


def test_run_returns_or_raises_what_its_coroutine_does():
    async def ok():
        await asyncio.sleep(0)
        return 7

    async def bad():
        raise KeyError("k")

    assert relay.run(ok()) == 7
    with pytest.raises(KeyError):
        relay.run(bad())
    with pytest.raises(RuntimeError):  # its loop is closed, as asyncio.run's
        asyncio.get_event_loop().run_until_complete(ok())


def test_run_from_another_thread_too():
    out = []
    thread = threading.Thread(target=lambda: out.append(relay.run(asyncio.sleep(0, "x"))))
    thread.start()
    thread.join(10)
    assert out == ["x"]


def _handed_over():
    """In a task: whether it runs on the thread that led its worker's loop (``None``
    where the worker has no relay); and whether another thread leads meanwhile."""
    from distributed3.worker.relay import _relays

    found = [r for r in list(_relays.values()) if r.runner is not None]
    if not found:
        return None, None
    return found[0].running_since is not None, found[0].taken


def _handed_over_after(flag, deadline=30):
    """In a task: as :func:`_handed_over`, once the file ``flag`` exists."""
    open(flag + ".started", "w").close()
    end = time.monotonic() + deadline
    while not os.path.exists(flag) and time.monotonic() < end:
        time.sleep(0.005)
    return _handed_over()


@pytest.fixture(scope="module")
def process_pool():
    with Pool(n_workers=1) as pool:  # a worker process of its own, forked by its center
        yield pool


def test_lone_tasks_run_on_the_thread_that_read_them(process_pool):
    handed = [process_pool.apply(_handed_over).get()[0] for _ in range(20)]
    # all but the first: it moves the loop off the main thread, and waits in the queue
    assert sum(handed) >= 19, handed


def test_a_long_task_does_not_hold_up_its_worker(process_pool, tmp_path):
    pool = process_pool
    flag = str(tmp_path / "go")
    pool.apply(_handed_over).get()  # the loop is off the main thread: hand-overs now
    handle = pool.submit(_handed_over_after, flag)
    end = time.monotonic() + 30
    while not os.path.exists(flag + ".started") and time.monotonic() < end:
        time.sleep(0.005)
    assert os.path.exists(flag + ".started")
    # while the task runs on the thread that read it, the worker's loop serves on
    (worker,) = pool.session.cores
    start = time.monotonic()
    ident = pool.session.sync(pool.session.rpc(worker).identity(), timeout=10)
    assert ident["type"] == "Worker" and time.monotonic() - start < 5
    open(flag, "w").close()
    assert handle.get(timeout=30) == (True, True)  # it was handed over; another led


def test_tasks_queued_beside_a_hand_over_are_not_stranded(process_pool):
    # two lone tasks in one frame, read in one turn of the worker's loop: the first is
    # handed to the thread that leads, the second queued, its core counted as taken
    # by that thread -- which must see it drained when it leads on
    session = process_pool.session
    process_pool.apply(_handed_over).get()  # the loop is off the main thread
    (worker,) = session.cores
    function = dumps_function(abs)

    async def two_in_one_frame(n):
        channel = await session.channels.get(worker)
        entries, futures = [], []
        for i in range(2):
            msg = {"op": "compute", "key": f"stranded-{n}-{i}", "function": function,
                   "args": (-i,), "values_only": True}  # fmt: skip
            ident = next(channel._ids)
            futures.append(channel.waiting.setdefault(ident, channel._loop.create_future()))
            entries.append((ident, pack(msg)))
        channel._send(entries)
        async with asyncio.timeout(10):
            return [(await f)["status"] for f in futures]

    for n in range(20):
        assert session.sync(two_in_one_frame(n)) == ["OK", "OK"]
    for _ in range(3):  # and a loop of submits, where this happens now and then
        assert process_pool.gather([process_pool.submit(abs, -i) for i in range(3000)]) \
            == list(range(3000))


def test_in_process_workers_have_no_relay(pool):
    assert pool.apply(_handed_over).get() == (None, None)
