"""Server dispatch, structured replies, rpc and the connection pool."""
import asyncio
import gc
import threading

import pytest

from distributed3 import ConnectionBrokenError, RemoteTraceback
from distributed3.core.comm import connect
from distributed3.core.messages import result_of
from distributed3.core.server import ConnectionPool, Server, rpc
from distributed3.testing import gen_test
from distributed3.utils import format_address, wait_for


class Calc(Server):
    def __init__(self, **kwargs):
        super().__init__({
            "add": self.add, "slow_add": self.slow_add, "fail": self.fail,
            "lock": lambda comm: threading.Lock(), "note": self.note,
        }, **kwargs)  # fmt: skip
        self.notes = []

    def add(self, comm, x, y):
        return x + y

    async def slow_add(self, comm, x, y, delay=0.0):
        await asyncio.sleep(delay)
        return x + y

    def fail(self, comm, kind="value"):
        def deep_inside():
            raise {"value": ValueError, "key": KeyError}[kind]("broken on purpose")

        deep_inside()

    def note(self, comm, text):
        self.notes.append(text)


@gen_test()
async def test_sync_and_async_handlers_and_identity():
    server = await Calc(name="calc").start(port=0)
    try:
        async with rpc(server.address) as r:
            assert await r.add(x=1, y=2) == 3
            assert await r.slow_add(x=2, y=3) == 5
            ident = await r.identity()
        assert ident["type"] == "Calc" and ident["name"] == "calc"
        assert tuple(ident["address"]) == server.address and ident["version"]
        assert server.counters["add"] == 1 and server.counters["identity"] == 1
    finally:
        await server.close()


@gen_test()
async def test_remote_exception_keeps_type_and_traceback():
    server = await Calc().start(port=0)
    try:
        async with rpc(server.address) as r:
            with pytest.raises(ValueError, match="broken on purpose") as info:
                await r.fail()
            cause = info.value.__cause__
            assert isinstance(cause, RemoteTraceback)
            assert cause.peer == format_address(server.address)
            assert "deep_inside" in cause.text
            with pytest.raises(KeyError):
                await r.fail(kind="key")
            with pytest.raises(TypeError, match="unexpected keyword"):
                await r.add(x=1, z=2)  # wrong arguments: an error reply, not a crash
            assert await r.add(x=1, y=1) == 2
    finally:
        await server.close()


@gen_test()
async def test_unknown_op_malformed_message_and_unpicklable_result():
    server = await Calc().start(port=0)
    try:
        comm = await connect(server.address)
        await comm.write({"op": "frobnicate"})
        reply = await comm.read()
        assert reply["status"] == "error" and "no operation 'frobnicate'" in str(reply["exception"])
        for junk in (["not", "a", "dict"], {"no_op": 1}, {"op": 42}):
            await comm.write(junk)
            reply = await comm.read()
            assert reply["status"] == "error" and "malformed message" in str(reply["exception"])
        await comm.write({"op": "lock"})
        reply = await comm.read()
        assert reply["status"] == "error" and "lock" in str(reply["exception"])
        await comm.write({"op": "add", "x": 2, "y": 2})  # the same connection still works
        assert (await comm.read())["result"] == 4
        comm.close()
    finally:
        await server.close()


@gen_test()
async def test_one_way_messages():
    server = await Calc().start(port=0)
    try:
        comm = await connect(server.address)
        await comm.write({"op": "note", "text": "a", "reply": False})
        await comm.write({"op": "note", "text": "b", "reply": False})
        await comm.write({"op": "add", "x": 1, "y": 1})
        assert (await comm.read())["result"] == 2  # the first reply is to the add
        assert server.notes == ["a", "b"]
        comm.close()
    finally:
        await server.close()


@gen_test()
async def test_connection_pool_reuses_and_retries_stale_connections():
    server = await Calc().start(port=0)
    pool = ConnectionPool()
    try:
        for i in range(50):
            assert await pool(server.address).add(x=i, y=1) == i + 1
        assert len(server.comms) == 1  # one connection, reused fifty times
        # concurrent calls open more connections, then all go back to the pool
        results = await asyncio.gather(*[pool(server.address).slow_add(x=i, y=0, delay=0.05)
                                         for i in range(5)])  # fmt: skip
        assert results == list(range(5)) and len(server.comms) == 5
        assert not pool.busy and len(pool.idle[server.address]) == 5
        # the server drops its side: the idle connections are stale, the next call still works
        for comm in list(server.comms):
            comm.close()
        await wait_for(lambda: not server.comms, 5, "server kept connections")
        assert await pool(server.address).add(x=1, y=1) == 2
    finally:
        await pool.close()
        await server.close()


@gen_test()
async def test_rpc_timeout_names_the_peer():
    server = await Calc().start(port=0)
    try:
        async with rpc(server.address, timeout=0.1) as r:
            with pytest.raises(TimeoutError, match=f"{format_address(server.address)} did not "
                                                   "answer 'slow_add'"):  # fmt: skip
                await r.slow_add(x=1, y=1, delay=5)
            assert await r.add(x=1, y=1) == 2  # a fresh connection replaces the timed-out one
    finally:
        await server.close()


@gen_test()
async def test_garbage_from_one_client_does_not_disturb_others():
    server = await Calc().start(port=0)
    try:
        good = ConnectionPool()
        reader, writer = await asyncio.open_connection(*server.address)
        await reader.readexactly(36)  # the server hello
        writer.write(b"\xff" * 4096)  # not a client hello at all
        await writer.drain()
        assert await reader.read() == b""  # closed on us
        writer.close()
        assert await good(server.address).add(x=20, y=22) == 42
        await good.close()
    finally:
        await server.close()


@gen_test()
async def test_calls_to_a_closed_server_fail_clearly():
    server = await Calc().start(port=0)
    address = server.address
    pool = ConnectionPool()
    assert await pool(address).add(x=1, y=2) == 3
    await server.close()
    with pytest.raises(ConnectionBrokenError, match=format_address(address)):
        await pool(address).add(x=1, y=2)
    await pool.close()


class Payload:
    """A value a handler returns; weak-referenceable, to see when the server drops it."""


@gen_test()
async def test_the_server_holds_no_reply_or_message_while_it_waits_for_the_next():
    """A worker kept a 256 MB reply alive until its connection's next message."""
    import gc
    import weakref

    kept = {}
    server = await Server({"give": lambda comm: kept.pop("value"),
                           "take": lambda comm, value: None}).start(port=0)  # fmt: skip
    comm = await connect(server.address)
    try:
        kept["value"] = Payload()
        sent = weakref.ref(kept["value"])
        await comm.write({"op": "give"})
        assert isinstance((await comm.read())["result"], Payload)
        await comm.write({"op": "take", "value": Payload()})
        await comm.read()
        gc.collect()
        assert sent() is None  # the connection is open and idle: nothing of it is kept
        assert not [o for o in gc.get_objects() if type(o) is Payload]
    finally:
        comm.close()
        await server.close()


def test_a_remote_error_leaves_no_reference_cycle_through_its_traceback():
    """Its traceback holds the frames it went through, which held the reply holding it:
    a cycle that kept a batch's tasks and handles (and their keys on the workers) until
    the cyclic collector ran."""
    def fail_once():
        try:
            result_of({"status": "error", "exception": ValueError("x"), "traceback": ""},
                      ("127.0.0.1", 1))  # fmt: skip
        except ValueError:
            pass

    gc.collect()
    gc.disable()
    try:
        fail_once()
        assert gc.collect() == 0  # nothing left that only the cyclic collector frees
    finally:
        gc.enable()

