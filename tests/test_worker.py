"""Every worker op, peer-to-peer input fetching, reports to the center, hand-offs on close."""
import asyncio
import threading

import numpy as np
import pytest

from distributed3 import SerializationError, Worker, WorkerLostError
from distributed3.exceptions import TaskGivenBackError
from distributed3.core.server import ConnectionPool
from distributed3.core.protocol import dumps_function
from distributed3.keys import KeyRef
from distributed3.testing import cluster, gen_test, held
from distributed3.utils import wait_for
from distributed3.worker.runner import TaskRunner


def compute_msg(key, func, *args, who_has=None, **kwargs):
    msg = {"key": key, "function": dumps_function(func), "args": args}
    if kwargs:
        msg["kwargs"] = kwargs
    if who_has is not None:
        msg["who_has"] = who_has
    return msg


@gen_test()
async def test_data_ops_and_reports():
    async with cluster(1) as (center, [w]):
        pool = ConnectionPool()
        r = pool(w.address)
        reply = await r.update_data(data={"x": 1, "arr": np.zeros(10)})
        assert reply == {"nbytes": {"x": reply["nbytes"]["x"], "arr": 80}}
        assert set(center.who_has["arr"]) == {w.address}  # reported before the reply came
        assert center.nbytes["arr"] == 80
        assert (await r.get_data(keys=["x"])) == {"x": 1}
        assert sorted(await r.keys()) == ["arr", "x"]
        with pytest.raises(KeyError, match="does not hold key 'nope'"):
            await r.get_data(keys=["x", "nope"])
        assert await r.delete_data(keys=["x", "never-there"]) == 1
        assert "x" not in center.who_has and "x" not in w.data
        info = await r.info()
        assert info["nkeys"] == 1 and info["nbytes"] == 80 and info["ncores"] == 1
        await pool.close()


@gen_test()
async def test_compute_local_input_moves_nothing():
    async with cluster(1) as (center, [w]):
        pool = ConnectionPool()
        r = pool(w.address)
        await r.update_data(data={"x": np.arange(100)})
        reply = await r.compute(**compute_msg("y", lambda a, b=0: a.sum() + b, KeyRef("x"),
                                              who_has={"x": [w.address]}, b=1))  # fmt: skip
        assert reply["key"] == "y" and reply["type"] == "int64"
        w.catch_up()  # the reply leaves the task thread before the loop keeps the result
        assert w.data["y"] == 4951
        # the report to the center follows the reply, batched, without a round trip per task
        await wait_for(lambda: set(center.who_has.get("y", ())) == {w.address}, 5, "y not reported")
        info = await r.info()
        assert info["peer_bytes_in"] == 0 and info["tasks_done"] == 1
        await pool.close()


@gen_test()
async def test_compute_fetches_missing_inputs_from_peers():
    async with cluster(2) as (center, [a, b]):
        pool = ConnectionPool()
        await pool(a.address).update_data(data={"x": np.ones(1000)})
        await pool(b.address).update_data(data={"y": np.ones(10)})
        # with a hint of where x lives
        await pool(b.address).compute(**compute_msg(
            "z", lambda x, y: x.sum() + y.sum(), KeyRef("x"), KeyRef("y"),
            who_has={"x": [a.address], "y": [b.address]}))  # fmt: skip
        b.catch_up()  # the reply leaves the task thread before the loop keeps the result
        assert b.data["z"] == 1010
        assert b.peer_bytes_in == 8000 and a.peer_bytes_in == 0
        assert "x" not in b.data  # fetched for the task, not kept
        # without a hint: the worker asks the center
        await pool(b.address).compute(**compute_msg(
            "z2", lambda d: d["x"].sum(), {"x": KeyRef("x")}, who_has={"x": []}))  # fmt: skip
        b.catch_up()
        assert b.data["z2"] == 1000 and b.peer_bytes_in == 16000
        # a wrong hint is corrected by the center too
        await pool(a.address).compute(**compute_msg(
            "z3", len, [KeyRef("y")], who_has={"y": [a.address]}))  # fmt: skip
        a.catch_up()
        assert a.data["z3"] == 1 and a.peer_bytes_in == 80
        await pool.close()


@gen_test()
async def test_input_held_by_nobody_is_a_clear_error():
    async with cluster(1) as (center, [w]):
        pool = ConnectionPool()
        with pytest.raises(WorkerLostError, match=r"could not find inputs 'ghost'"):
            await pool(w.address).compute(**compute_msg("k", len, KeyRef("ghost"),
                                                        who_has={"ghost": []}))  # fmt: skip
        assert "k" not in w.data
        await pool.close()


@gen_test()
async def test_task_exception_comes_back_with_the_users_traceback():
    def explode(x):
        raise ValueError(f"bad input {x}")

    async with cluster(1) as (center, [w]):
        pool = ConnectionPool()
        reply = await pool(w.address).compute(**compute_msg("k", explode, 7))
        assert isinstance(reply["exception"], ValueError)
        assert "bad input 7" in str(reply["exception"])
        assert "in explode" in reply["traceback"]
        assert "_run_task" not in reply["traceback"] and "thread.py" not in reply["traceback"]
        w.catch_up()  # the reply leaves the task thread before the loop counts the task
        assert "k" not in w.data and "k" not in center.who_has
        assert w.tasks_done == 1
        # a function that cannot even be loaded is a task error too, not a crash
        reply = await pool(w.address).compute(key="k2", function=b"not a pickle", args=())
        assert "exception" in reply
        assert (await pool(w.address).identity())["type"] == "Worker"
        await pool.close()


@gen_test()
async def test_close_hands_keys_to_peers_and_unregisters():
    async with cluster(3) as (center, [a, b, c]):
        pool = ConnectionPool()
        await pool(a.address).update_data(data={"x": 1, "y": 2})
        await pool(b.address).update_data(data={"y": 2})
        await a.close()  # x lives only on a: handed over; y is on b already: not sent
        assert a.address not in center.ncores
        assert len(center.who_has["x"]) == 1 and a.address not in center.who_has["x"]
        assert set(center.who_has["y"]) == {b.address}
        holder = b if "x" in b.data else c
        assert holder.data["x"] == 1
        await holder.close(handoff=False)  # leaving without handing over forgets x
        assert "x" not in center.who_has
        await pool.close()


@gen_test()
async def test_fetch_data_copies_from_peers():
    async with cluster(2) as (center, [a, b]):
        pool = ConnectionPool()
        await pool(a.address).update_data(data={"x": b"abc"})
        reply = await pool(b.address).fetch_data(who_has={"x": [a.address]})
        assert reply["nbytes"] == {"x": 3} and b.data["x"] == b"abc"
        assert set(center.who_has["x"]) == {a.address, b.address} and b.peer_bytes_in == 3
        await pool.close()


@gen_test()
async def test_terminate_stops():
    async with cluster(1) as (center, [b]):
        pool = ConnectionPool()
        assert await pool(b.address).terminate() == "OK"
        await wait_for(lambda: b.finished.is_set(), 5, "terminate did not stop the worker")
        await wait_for(lambda: not center.ncores, 5, "center still lists the worker")
        await pool.close()


@gen_test(timeout=20)
async def test_closing_a_worker_ends_the_handlers_of_its_queued_tasks(gate):
    async with cluster(1, ncores=1) as (center, [w]):
        pool = ConnectionPool()
        calls = [asyncio.ensure_future(pool(w.address).compute(**compute_msg(k, held, i)))
                 for i, k in enumerate("ab")]  # fmt: skip
        await wait_for(lambda: w.active == 2, 5, "both tasks should be in the worker")
        await w.close()  # "b" is still queued: it never runs, and its handler must end
        gate.set()
        await asyncio.gather(*calls, return_exceptions=True)
        await wait_for(lambda: w.active == 0, 5, "a compute handler never ended")
        await pool.close()


def _inc(x):
    return x + 1


@gen_test(timeout=20)
async def test_a_retiring_worker_hands_off_its_last_result_with_its_owner():
    async with cluster(1) as (center, [b]):
        a = await Worker(center.address, ncores=1, max_tasks=1).start(port=0)
        pool = ConnectionPool()
        await pool(a.address).compute(key="k", function=dumps_function(_inc), args=(1,),
                                      owner="client-1")  # fmt: skip
        await asyncio.wait_for(a.finished.wait(), 10)  # retired at once, its report queued
        assert b.data.get("k") == 2  # handed off, not lost
        await wait_for(lambda: set(center.who_has.get("k", ())) == {b.address}, 5, "k unknown")
        assert center.owner.get("k") == "client-1"
        center._client_gone("client-1")  # the client died without releasing it
        await wait_for(lambda: "k" not in b.data, 5, "k stayed on the peer")
        await pool.close()


def double(x):
    return 2 * x


@gen_test()
async def test_an_input_fetch_tries_the_other_holders_of_a_key_whose_first_holder_died():
    """The center still lists a holder that no longer answers (its link to the center
    lives on) beside a live one: the fetch goes to the live one, even when the dead one
    sorts first, where it used to ask the center again and pick the same dead one."""
    async with cluster(3) as (center, workers):
        pool = ConnectionPool()
        try:
            dead, alive = sorted(workers[:2], key=lambda w: str(w.address))
            for w in (dead, alive):
                await pool(w.address).update_data(data={"x": 21})
            dead.stop()  # it takes no connection any more, yet heartbeats on
            for comm in list(dead.comms):
                comm.close()
            assert dead.address in center.who_has["x"]
            holders = [dead.address, alive.address]
            result = await pool(workers[2].address).compute(
                **compute_msg("y", double, KeyRef("x"), who_has={"x": holders}))
            assert result["key"] == "y" and result["pickled"] is not None  # small: inline
            await wait_for(lambda: workers[2].data.get("y") == 42, 5, "y was not kept")
        finally:
            await pool.close()


@gen_test(timeout=20)
async def test_tasks_sent_together_are_answered_together_and_a_held_one_delays_no_other(gate):
    """One frame of tasks, one of them held: the others' replies come back (together,
    within the 1 ms a reply may wait) while it runs; its own comes when it ends."""
    from distributed3.core.channel import Channel

    async with cluster(1, ncores=2) as (center, [w]):
        channel = await Channel.open(w.address)
        try:
            await channel.call({"op": "compute", **compute_msg("warm", _inc, 0)})
            frames = w.counters["frames_in"]
            stuck = asyncio.ensure_future(
                channel.call({"op": "compute", **compute_msg("stuck", held, 7)}))
            short = [channel.call({"op": "compute", **compute_msg(f"k{i}", _inc, i)})
                     for i in range(50)]  # fmt: skip
            replies = await asyncio.gather(*short)
            assert [r["key"] for r in replies] == [f"k{i}" for i in range(50)]
            assert w.counters["frames_in"] - frames == 2  # the held one alone, then the rest
            keys = [f"k{i}" for i in range(50)]  # asked for: kept before any message is read
            got = await channel.call({"op": "get_data", "keys": keys})
            assert [got[k] for k in keys] == list(range(1, 51)) and not stuck.done()
            gate.set()
            assert (await stuck)["key"] == "stuck"
            assert await channel.call({"op": "get_data", "keys": ["stuck"]}) == {"stuck": 7}
        finally:
            channel.close()


class _Unpicklable(Exception):
    def __reduce__(self):
        import threading

        return (threading.Lock, (), {"lock": threading.Lock()})


def _raise_unpicklable(x):
    raise _Unpicklable("broke")


@pytest.fixture
def replies_unchecked(monkeypatch):
    """Task exceptions go into replies as they are (not made portable first), so that
    one that cannot be pickled makes its reply unsendable."""
    import distributed3.worker.execute as execute

    monkeypatch.setattr(execute, "portable", lambda e: e)


def test_a_task_whose_reply_cannot_be_sent_fails_alone_on_its_channel(replies_unchecked):
    _reply_cannot_be_sent()


@gen_test(timeout=20)
async def _reply_cannot_be_sent():
    from distributed3.core.channel import Channel

    async with cluster(1, ncores=1) as (center, [w]):
        channel = await Channel.open(w.address)
        try:
            results = await asyncio.gather(
                channel.call({"op": "compute", **compute_msg("a", _inc, 1)}),
                channel.call({"op": "compute", **compute_msg("b", _raise_unpicklable, 0)}),
                channel.call({"op": "compute", **compute_msg("c", _inc, 2)}),
                return_exceptions=True,
            )
            assert results[0]["key"] == "a" and results[2]["key"] == "c"
            assert isinstance(results[1], SerializationError)
            assert "could not serialize a reply" in str(results[1])
            got = await channel.call({"op": "get_data", "keys": ["a", "c"]})
            assert got == {"a": 2, "c": 3} and "b" not in w.data
            await wait_for(lambda: w.active == 0, 5, "a task was never accounted for")
        finally:
            channel.close()


@gen_test(timeout=20)
async def test_an_exception_that_cannot_be_pickled_comes_back_as_a_task_error():
    async with cluster(1, ncores=1) as (center, [w]):
        peers = ConnectionPool()
        try:
            reply = await peers.call(w.address, {"op": "compute",
                                                 **compute_msg("b", _raise_unpicklable, 0)})
        finally:
            await peers.close()
        assert type(reply["exception"]).__name__ == "TaskError"
        assert "_Unpicklable: broke (the exception could not travel as itself" in str(
            reply["exception"])
        assert "_raise_unpicklable" in reply["traceback"]


@gen_test(timeout=20)
async def test_queued_tasks_are_cancelled_by_key_or_with_their_connection(monkeypatch):
    from distributed3.core.channel import Channel
    from distributed3.testing import GATE

    GATE.clear()
    try:
        async with cluster(1, ncores=1) as (center, [w]):
            channel = await Channel.open(w.address)
            calls = [asyncio.ensure_future(channel.call({"op": "compute",
                                                         **compute_msg(k, held, k)}))
                     for k in ("a", "b", "c")]  # fmt: skip
            await wait_for(lambda: w.active == 3, 5, "the tasks to arrive")
            other = await Channel.open(w.address)
            assert await other.call({"op": "cancel", "keys": ["b", "zzz"]}) == 1
            with pytest.raises(Exception, match="'b' was cancelled"):
                await calls[1]
            assert w.active == 2  # 'a' runs (held), 'c' waits
            # given back, for its pool to run elsewhere: a running task is not
            assert await other.call({"op": "cancel", "keys": ["a", "c"], "give_back": True}) == 1
            with pytest.raises(TaskGivenBackError, match="'c' was given back unrun"):
                await calls[2]
            calls[2] = asyncio.ensure_future(channel.call({"op": "compute",
                                                           **compute_msg("c", held, "c")}))
            await wait_for(lambda: w.active == 2, 5, "'c' sent again")
            channel.close()  # the client went: 'c' is dropped, 'a' runs to its end
            await wait_for(lambda: w.active == 1, 5, "the closed connection's task dropped")
            GATE.set()
            await wait_for(lambda: w.active == 0 and "a" in w.data, 5, "'a' to end")
            assert "c" not in w.data and "b" not in w.data
            other.close()
            await asyncio.gather(*calls, return_exceptions=True)  # the closed channel's
    finally:
        GATE.set()


class _Replies:
    """A connection's reply side, as task threads use it: counts what they sent."""

    def __init__(self):
        self.sent = 0
        self.lock = threading.Lock()  # two threads send at once

    def prepare(self, msg):
        return msg

    def send_prepared(self, msg, loop, now=False):
        with self.lock:
            self.sent += 1


@gen_test()
async def test_bursts_of_tasks_start_no_more_task_threads_than_cores():
    """Tasks come in bursts, one now and then while threads end their drains: each
    wakes an idle thread or starts one, never more than ``ncores`` in all, and every
    task is answered."""
    runner, replies, function = TaskRunner(2, lambda *stored: None), _Replies(), dumps_function(abs)
    try:
        for i in range(5000):
            runner.launch(replies, [f"k{i}"], function, [(-i,)], True, None, None, None, True)
            if i % 7 == 0:
                await asyncio.sleep(0)
        await wait_for(lambda: not runner.active, 10, "tasks left unanswered")
        assert replies.sent == 5000
        names = [t.name for t in threading.enumerate() if t.name.startswith("distributed3-task-")]
        assert len(names) <= 2 and runner._threads <= 2
    finally:
        runner.close()
