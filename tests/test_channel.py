"""Channels: many requests on one connection, sent and answered together."""
import asyncio
import threading

import pytest

from distributed3 import ConnectionBrokenError, ProtocolError, SerializationError
from distributed3.core.channel import Channel, Channels, ReplyBox, SubComm
from distributed3.core.comm import connect
from distributed3.core.server import REPLIED, Server, ok_message
from distributed3.testing import gen_test
from distributed3.utils import wait_for


class Unreadable:
    """Pickles, but cannot be unpickled: its reconstructor raises."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise RuntimeError("refusing to be unpickled")


class Echo(Server):
    """Handlers answered on the loop, later, and from a thread of our own."""

    def __init__(self, **kwargs):
        super().__init__({
            "add": lambda comm, x, y: x + y,
            "later": self.later,
            "threaded": self.threaded,
            "unreadable": lambda comm: Unreadable(),
            "gate": self.wait_gate,
        }, **kwargs)  # fmt: skip
        self.gate = asyncio.Event()

    async def later(self, comm, x, delay):
        await asyncio.sleep(delay)
        return x

    def threaded(self, comm, x):
        loop = asyncio.get_running_loop()

        def run():
            comm.send_prepared(comm.prepare(ok_message(x * 2)), loop)

        threading.Thread(target=run).start()
        return REPLIED

    async def wait_gate(self, comm, x):
        await self.gate.wait()
        return x


@gen_test()
async def test_requests_of_one_turn_leave_in_one_frame_and_replies_match_by_id():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    try:
        first = await channel.call({"op": "add", "x": 1, "y": 1})  # alone: at once
        totals = await asyncio.gather(*[channel.call({"op": "add", "x": i, "y": 100})
                                        for i in range(500)])  # fmt: skip
        assert first == 2 and totals == [i + 100 for i in range(500)]
        assert server.counters["many"] == 3  # the lone one, the first of the burst, the rest
        assert server.counters["add"] == 501
    finally:
        channel.close()
        await server.close()


@gen_test()
async def test_replies_come_as_they_are_ready_whatever_the_order_of_requests():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    try:
        slow = asyncio.ensure_future(channel.call({"op": "gate", "x": "slow"}))
        fast = [channel.call({"op": "later", "x": i, "delay": 0}) for i in range(20)]
        threaded = [channel.call({"op": "threaded", "x": i}) for i in range(20)]
        assert await asyncio.gather(*fast) == list(range(20))
        assert await asyncio.gather(*threaded) == [2 * i for i in range(20)]
        assert not slow.done()  # the others did not wait for it
        server.gate.set()
        assert await slow == "slow"
    finally:
        channel.close()
        await server.close()


@gen_test()
async def test_an_unserializable_request_fails_alone():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    try:
        lock = threading.Lock()
        results = await asyncio.gather(
            channel.call({"op": "add", "x": 1, "y": 2}),
            channel.call({"op": "add", "x": lock, "y": 2}),
            channel.call({"op": "add", "x": 3, "y": 4}),
            return_exceptions=True,
        )
        assert results[0] == 3 and results[2] == 7
        assert isinstance(results[1], SerializationError)
        assert "could not serialize a message for 127.0.0.1:" in str(results[1])
    finally:
        channel.close()
        await server.close()


@gen_test()
async def test_a_reply_that_cannot_be_read_fails_alone():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    try:
        results = await asyncio.gather(
            channel.call({"op": "add", "x": 1, "y": 2}),
            channel.call({"op": "unreadable"}),
            channel.call({"op": "add", "x": 3, "y": 4}),
            return_exceptions=True,
        )
        assert results[0] == 3 and results[2] == 7
        assert isinstance(results[1], SerializationError)
        assert "refusing to be unpickled" in str(results[1])
        assert await channel.call({"op": "add", "x": 5, "y": 5}) == 10  # still open
    finally:
        channel.close()
        await server.close()


@gen_test()
async def test_an_unknown_op_and_a_bad_entry_get_errors_and_the_server_goes_on():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    try:
        with pytest.raises(ValueError, match="has no operation 'nope'"):
            await channel.call({"op": "nope"})
        with pytest.raises(ProtocolError, match="expected a dict with an 'op'"):
            await channel.call(["not", "a", "dict"])
        # a 'many' message whose requests are not a list: a clear error, not a crash
        comm = await connect(server.address)
        await comm.write({"op": "many", "msgs": 42, "reply": False})
        reply = await comm.read()
        assert "expected a list of requests" in str(reply["exception"])
        comm.close()
        assert await channel.call({"op": "add", "x": 1, "y": 1}) == 2
    finally:
        channel.close()
        await server.close()


@gen_test()
async def test_when_the_connection_breaks_every_open_request_raises():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    waiting = [asyncio.ensure_future(channel.call({"op": "gate", "x": i})) for i in range(5)]
    await asyncio.sleep(0)
    await server.close()
    for future in waiting:
        with pytest.raises(ConnectionBrokenError, match="closed by the peer"):
            await future
    assert channel.closed
    with pytest.raises(ConnectionBrokenError):
        await channel.call({"op": "add", "x": 1, "y": 1})


@gen_test()
async def test_a_request_that_times_out_leaves_the_channel_usable():
    server = await Echo().start(port=0)
    channel = await Channel.open(server.address)
    try:
        with pytest.raises(TimeoutError):
            await channel.call({"op": "gate", "x": 1}, timeout=0.05)
        assert not channel.waiting  # its late reply will be dropped
        assert await channel.call({"op": "add", "x": 2, "y": 2}) == 4
        server.gate.set()
        assert await channel.call({"op": "add", "x": 3, "y": 3}) == 6
    finally:
        channel.close()
        await server.close()


@gen_test()
async def test_channels_open_one_connection_per_address_and_reopen_after_a_break():
    server = await Echo(secret="s3cret").start(port=0)
    channels = Channels(secret="s3cret")
    try:
        totals = await asyncio.gather(*[channels.call(server.address, {"op": "add", "x": i,
                                                                       "y": 0})
                                        for i in range(50)])  # fmt: skip
        assert totals == list(range(50)) and len(server.comms) == 1
        first = channels.open[server.address]
        first.close()
        assert await channels.call(server.address, {"op": "add", "x": 1, "y": 1}) == 2
        assert channels.open[server.address] is not first
    finally:
        channels.close()
        await server.close()


@gen_test()
async def test_a_wrong_secret_is_refused_before_any_request_is_read():
    from distributed3 import AuthenticationError

    server = await Echo(secret="s3cret").start(port=0)
    try:
        with pytest.raises(AuthenticationError):
            await Channel.open(server.address, secret="wrong")
        assert server.counters["many"] == 0
    finally:
        await server.close()


def test_a_sub_comm_names_its_peer():
    class Box:
        pass

    class Comm:
        peer = ("127.0.0.1", 1234)
        closed = False

    sub = SubComm(Comm(), Box(), 7)
    assert sub.peer == ("127.0.0.1", 1234) and not sub.closed
    assert sub.prepare({"x": 1})[0] == 7
    assert sub.prepare({"x": threading.Lock()}) is None


@gen_test()
async def test_dropping_a_channel_fails_its_open_requests_and_the_next_call_reconnects():
    server = await Echo().start(port=0)
    channels = Channels()
    try:
        waiting = asyncio.ensure_future(channels.call(server.address, {"op": "gate", "x": 1}))
        await wait_for(lambda: server.address in channels.open
                       and channels.open[server.address].waiting, 5, "never sent")  # fmt: skip
        channels.drop(server.address, "was dropped by the center")
        with pytest.raises(ConnectionBrokenError, match="was dropped by the center"):
            await waiting
        assert await channels.call(server.address, {"op": "add", "x": 1, "y": 1}) == 2
        channels.drop(("127.0.0.1", 1), "is not open")  # nothing open there: nothing to do
    finally:
        server.gate.set()
        channels.close()
        await server.close()


class _Sent:
    """What a ReplyBox needs of its connection; keeps what it was given to send."""

    closed = False

    def __init__(self):
        self.sent = []
        self.stream = self

    def writing(self):
        return False

    def encode(self, entries):
        return [entries], len(entries)

    def send_direct(self, buffers):
        self.sent.extend(buffers)
        return []


@gen_test()
async def test_a_long_tasks_reply_leaves_at_once_a_tiny_ones_waits_for_the_others():
    """With another request still open, a thread's reply waits (for the loop, at most
    ``WAIT``) to leave with the others, unless its task ran long (``now``): the pool
    has the next task queued on that reply, and the core would idle meanwhile."""
    comm = _Sent()
    box = ReplyBox(comm)
    box.WAIT = 60  # the tiny one's wait outlasts the test: only "now" sends it
    box.opened(3)
    await asyncio.to_thread(box.put_from_thread, (0, b"tiny"))
    assert comm.sent == []  # waits: two requests are open
    await asyncio.to_thread(box.put_from_thread, (1, b"long"), True)
    assert comm.sent == [[(0, b"tiny"), (1, b"long")]]  # at once, with what was ready
    await asyncio.to_thread(box.put_from_thread, (2, b"last"))
    assert comm.sent[-1] == [(2, b"last")]  # the last open one: at once


GARBAGE_CYCLES = """
import gc
import numpy as np
from distributed3.core.channel import pack

class Node:
    pass

for array in [np.arange(20_000.0), np.ones((400, 300))[::2], b"x" * 100_000] * 50:
    entry = pack({"op": "compute", "args": (array,)})
    node = Node()  # made after the entry: the collector meets the entry's buffers first
    node.entry, node.me = entry, node
    del entry, node
gc.collect()
print("collected")
"""


def test_an_entrys_big_buffers_survive_the_garbage_collector():
    """A request's big buffers, held in a cycle the collector breaks, must not be
    memoryviews exported to a PickleBuffer: Python 3.11 then says "memoryview has 1
    exported buffer" and may crash (CPython gh-77894; 3,000 submits of a 100 KB array
    crashed the client with a segfault)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", GARBAGE_CYCLES], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "collected" in done.stdout
    assert "exported buffer" not in done.stderr, done.stderr


def test_entries_round_trip_through_a_many_message_whatever_their_buffers():
    import numpy as np

    from distributed3.core.channel import pack, unpack
    from distributed3.core.protocol import dumps, loads

    values = [np.arange(10.0), np.arange(20_000.0), np.asfortranarray(np.ones((300, 200))),
              np.ones((400, 300))[::2], b"y" * 100_000, bytearray(b"z" * 70_000)]  # fmt: skip
    many = loads(dumps({"op": "many", "msgs": [(i, pack({"v": v})) for i, v in enumerate(values)]}))
    for (i, frames), value in zip(many["msgs"], values):
        got = unpack(frames, "peer")["v"]
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value


@gen_test()
async def test_requests_that_together_have_more_frames_than_the_peer_takes_fail_saying_so():
    """Each within the limit, together over it: they fail with the reason (they used to
    wait for good, the error only logged from the loop)."""
    import numpy as np

    from distributed3.core.comm import Limits

    server = await Echo().start(port=0)
    try:
        channel = await Channel.open(server.address, limits=Limits(max_frames=4))
        lone = asyncio.ensure_future(channel.call({"op": "add", "x": 1, "y": 0}))
        await asyncio.sleep(0)  # sent at once, alone: the next two are queued together
        big = [np.ones(10_000), np.zeros(10_000)]
        calls = [channel.call({"op": "later", "x": big, "delay": 0}) for _ in range(2)]
        for outcome in await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10):
            assert isinstance(outcome, SerializationError), outcome
            assert "more than a peer takes (4)" in str(outcome)
        assert await lone == 1
        assert await channel.call({"op": "add", "x": 2, "y": 0}) == 2  # the channel goes on
        channel.close()
    finally:
        await server.close()


GARBAGE_CYCLES_OWN_REDUCE = """
import gc
import pickle
from distributed3.core.channel import pack

class Blob:  # its reduce hands out a memoryview of its bytearray
    def __init__(self, b):
        self.b = b

    def __reduce_ex__(self, protocol):
        return Blob, (pickle.PickleBuffer(memoryview(self.b)),)

class Node:
    pass

for i in range(150):
    entry = pack({"op": "compute", "args": (Blob(bytearray(100_000)),)})
    node = Node()
    node.entry, node.me = entry, node
    del entry, node
gc.collect()
print("collected")
"""


def test_an_entrys_buffer_over_a_memoryview_of_a_memoryview_survives_the_collector():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", GARBAGE_CYCLES_OWN_REDUCE],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exported buffer" not in done.stderr, done.stderr


@pytest.mark.timeout(30)
@gen_test()
async def test_a_malformed_reply_fails_the_open_requests_saying_so():
    """Not a list, or a list of something else than ``(id, frames)`` pairs: nothing more
    on that connection can be trusted."""
    from tornado.netutil import bind_sockets
    from tornado.tcpserver import TCPServer

    from distributed3.core.comm import accept

    class Liar(TCPServer):
        async def handle_stream(self, stream, address):
            comm = await accept(stream, address)
            await comm.read()
            await comm.write(self.reply)

    for reply, error in (({"not": "a list"}, "answered a 'many' message with dict"),
                         ([(0,)], "sent a malformed reply")):  # fmt: skip
        sockets = bind_sockets(0, "127.0.0.1")
        server = Liar()
        server.reply = reply
        server.add_sockets(sockets)
        channel = await Channel.open(("127.0.0.1", sockets[0].getsockname()[1]))
        with pytest.raises(ProtocolError, match=error):
            await channel.call({"op": "anything"})
        assert channel.closed
        server.stop()
