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
from distributed3.testing import process_cluster
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


def _relay_here():
    """In a task: its worker's Relay, or ``None`` (a worker without one)."""
    from distributed3.worker.relay import _relays

    found = [r for r in list(_relays.values()) if r.runner is not None]
    return found[0] if found else None


def _handed_over():
    """In a task: whether it runs on the thread that led its worker's loop (``None``
    where the worker has no relay); and whether another thread leads meanwhile."""
    relay, me = _relay_here(), threading.get_ident()
    if relay is None:
        return None, None
    relieved = me in relay.relieved
    return relieved or (relay.running or (None,))[0] == me, relieved


def _relieved_then_wait(flag, deadline=30):
    """In a task run by the leader: once another thread leads in its place, say so
    (``flag.relieved``), and wait for ``flag``; whether it was relieved."""
    relay, me = _relay_here(), threading.get_ident()
    end = time.monotonic() + deadline
    while me not in relay.relieved and time.monotonic() < end:
        time.sleep(0.005)
    open(flag + ".relieved", "w").close()
    while not os.path.exists(flag) and time.monotonic() < end:
        time.sleep(0.005)
    return me in relay.relieved


def _wait_for_file(path, deadline=30):
    end = time.monotonic() + deadline
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.005)
    return os.path.exists(path)


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
    assert _wait_for_file(flag + ".started")
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


@pytest.mark.parametrize("second", ["tiny", "long"])
def test_two_cores_two_leaders_own_tasks_at_once(tmp_path, second, monkeypatch):
    # the thread that took the lead from a long task runs a lone task of its own: the
    # watch must time that one, and the first one's end must not take its lead away
    tests = os.path.dirname(os.path.abspath(__file__))  # the worker imports this module
    monkeypatch.setenv("PYTHONPATH", tests + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with process_cluster(nworkers=1, ncores=2) as (address, _, _workers), Pool(address) as pool:
        pool.wait_for_workers(1, timeout=20)
        assert [pool.apply(abs, (-i,)).get(timeout=10) for i in range(3)] == [0, 1, 2]
        (worker,) = pool.session.cores
        first, then = str(tmp_path / "first"), str(tmp_path / "then")
        handles = [pool.submit(_relieved_then_wait, first)]
        try:
            assert _wait_for_file(first + ".relieved")  # another thread leads now
            if second == "tiny":
                assert pool.apply(abs, (-5,)).get(timeout=10) == 5
            else:
                handles.append(pool.submit(_relieved_then_wait, then))
                assert _wait_for_file(then + ".relieved")
            ident = pool.session.sync(pool.session.rpc(worker).identity(), timeout=5)
            assert ident["type"] == "Worker"  # the loop is led while both may run
        finally:
            open(first, "w").close()
            open(then, "w").close()
        assert [h.get(timeout=30) for h in handles] == [True] * len(handles)


class _Answers:
    """A connection's stand-in for tasks launched straight on a runner."""

    def prepare(self, msg):
        return None  # the loop answers

    def answer(self, msg):
        pass


def test_a_hand_over_in_the_turn_the_process_ends_does_not_hang_it():
    from distributed3.worker.runner import TaskRunner

    async def main():
        runner = TaskRunner(1, lambda *stored: None)
        runners.append(runner)
        function = dumps_function(abs)
        runner.launch(_Answers(), ["k0"], function, [(-1,)], True, None, None, None, True)
        # the first lone task moved the loop off this thread: a runner thread leads now
        deadline = time.monotonic() + 10
        while threading.get_ident() == caller[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        # a lone task read in the turn in which the main task's end stops the loop
        asyncio.get_running_loop().call_soon(runner.launch, _Answers(), ["k1"], function,
                                             [(-2,)], True, None, None, None, True)
        return "done"

    caller, out, runners = [], [], []

    def serve():
        caller.append(threading.get_ident())
        out.append(relay.run(main()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(10)
    runners[0].close()  # its idle threads end
    assert out == ["done"], "run() did not return"
