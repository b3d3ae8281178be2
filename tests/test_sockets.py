"""SocketStream: a plain TCP connection read and written on the loop by our own code."""
import asyncio
import socket
import struct

import pytest
from tornado.iostream import StreamClosedError

from distributed3 import ProtocolError
from distributed3.core.framing import Limits
from distributed3.core.sockets import SocketStream, connect_socket
from distributed3.testing import gen_test


def pair():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    return SocketStream(a), SocketStream(b)


def wire(*frames):
    return struct.pack(f"<Q{len(frames)}Q", len(frames), *map(len, frames)) + b"".join(frames)


@pytest.mark.timeout(60)
@gen_test()
async def test_writes_bigger_than_the_kernel_takes_arrive_whole_and_in_order():
    """What the socket does not take at once waits, in order, uncopied; each write's
    future is done once its bytes are all out."""
    left, right = pair()
    right.frame(Limits(), "left")
    big = bytes(range(256)) * (32 << 12)  # 32 MiB: far more than a socket buffers
    first = left.write(wire(b"small"))
    second = left.write(wire(b"head", big))
    assert left.writing()  # the kernel took part of it: the rest waits
    got = [await right.read_message() for _ in range(2)]
    await asyncio.gather(first, second)
    assert not left.writing()
    assert [bytes(f) for f in got[0][0]] == [b"small"]
    assert bytes(got[1][0][0]) == b"head" and got[1][0][1] == big
    left.close(); right.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_nobody_reading_stops_reading_until_somebody_does():
    """With a message waiting and nobody reading, it stops taking bytes off the socket
    (the sender's writes then wait in the kernel, then in its queue), and goes on
    when a reader comes."""
    left, right = pair()
    right.frame(Limits(), "left")
    assert await asyncio.wait_for(left.write(wire(b"one")), 5) is None
    await right.read_message()  # registered for reading from here
    writes = [left.write(wire(b"x" * (1 << 20))) for _ in range(64)]  # 64 MiB
    deadline = asyncio.get_running_loop().time() + 10
    while right.reading() or right.waiting() == 0:  # the first came, no one reads
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert left.writing() and right.waiting() == 1  # it stopped at one message
    got = [await right.read_message() for _ in range(64)]
    await asyncio.gather(*writes)
    assert all(nbytes == 1 << 20 for _, nbytes in got)
    left.close(); right.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_a_peer_that_closes_ends_reads_after_what_it_sent_and_fails_writes():
    left, right = pair()
    right.frame(Limits(), "left")
    await left.write(wire(b"last words"))
    left.close()
    frames, _ = await right.read_message()  # what came before the close first
    assert bytes(frames[0]) == b"last words"
    with pytest.raises(StreamClosedError):
        await right.read_message()
    with pytest.raises(StreamClosedError):
        right.write(b"anyone?")
    right.close()  # twice: nothing more happens
    assert right.closed() and left.closed()


@pytest.mark.timeout(30)
@gen_test()
async def test_a_write_waiting_when_the_connection_breaks_fails_saying_so():
    left, right = pair()
    right.frame(Limits(), "left")
    pending = left.write(b"x" * (64 << 20))  # more than the kernel takes: it waits
    assert not pending.done()
    right.close()
    with pytest.raises(StreamClosedError) as info:
        await pending
    assert isinstance(info.value.real_error, (BrokenPipeError, ConnectionResetError))
    left.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_a_message_over_the_limits_ends_the_connection_with_the_reason():
    left, right = pair()
    right.frame(Limits(max_frames=2), "left:1")
    await left.write(struct.pack("<Q", 3))
    with pytest.raises(ProtocolError, match=r"left:1 announced 3 frames \(limit 2\)"):
        await right.read_message()
    assert right.closed()
    left.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_bytes_read_before_framing_are_framed_first():
    """The handshake reads bytes; a message that came right behind them is not lost."""
    left, right = pair()
    await left.write(b"hello" + wire(b"first") + wire(b"second"))
    assert await right.read_bytes(5) == b"hello"
    right.frame(Limits(), "left")
    got = [bytes((await right.read_message())[0][0]) for _ in range(2)]
    assert got == [b"first", b"second"]
    left.close(); right.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_connect_socket_takes_addresses_and_names_and_says_what_failed():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        for host in ("127.0.0.1", "localhost"):
            stream = await connect_socket(host, port)
            conn, _ = server.accept()
            assert conn.getpeername() == stream.socket.getsockname()
            conn.close(); stream.close()
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):
        await connect_socket("127.0.0.1", port)  # nothing listens there now


@pytest.mark.timeout(30)
@gen_test()
async def test_a_message_that_comes_while_the_reader_waits_goes_to_fast_at_once():
    """``fast`` takes it in the I/O callback: the waiting reader is not woken for it.
    One it declines, and those after it, go to the reader, in order; so does one that
    comes while no reader waits."""
    left, right = pair()
    right.frame(Limits(), "left")
    taken = []
    right.fast = lambda frames, nbytes: bytes(frames[0]) != b"no" and not taken.append(
        bytes(frames[0]))  # fmt: skip
    reader = asyncio.ensure_future(right.read_message())
    await asyncio.sleep(0)  # the reader waits
    await left.write(wire(b"one") + wire(b"two"))
    await wait_until(lambda: taken == [b"one", b"two"])
    assert not reader.done()  # nothing for it: it waits on
    await left.write(wire(b"no") + wire(b"three"))
    assert [bytes((await reader)[0][0]), bytes((await right.read_message())[0][0])] == [
        b"no", b"three"]  # fmt: skip
    await left.write(wire(b"four"))  # nobody waits now: it waits for the reader
    await wait_until(lambda: right.waiting() == 1)
    assert bytes((await right.read_message())[0][0]) == b"four" and taken == [b"one", b"two"]
    left.close(); right.close()


async def wait_until(condition, timeout=5):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


@pytest.mark.timeout(30)
@gen_test()
async def test_a_whole_message_is_read_while_a_big_one_behind_it_still_comes():
    """One recv brings a small message whole and the start of a big one: the reader
    gets the small one now, not once the big one is in -- and still gets it if the
    connection then ends before the big one is."""
    for then in ("rest", "close"):
        left, right = pair()
        right.frame(Limits(), "left")
        reader = asyncio.ensure_future(right.read_message())
        await asyncio.sleep(0)
        big = wire(b"x" * (1 << 20))
        await left.write(wire(b"small") + big[:1000])
        frames, _ = await asyncio.wait_for(reader, 5)
        assert bytes(frames[0]) == b"small"
        if then == "rest":
            await left.write(big[1000:])
            assert (await right.read_message())[1] == 1 << 20
        else:
            left.close()
            with pytest.raises(StreamClosedError):
                await right.read_message()
        left.close(); right.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_messages_that_came_before_the_connection_ended_are_read_first():
    """A whole message, then in the same read a head over the limits: the reader gets
    the message, then the error."""
    left, right = pair()
    right.frame(Limits(max_frames=2), "left:1")
    reader = asyncio.ensure_future(right.read_message())
    await asyncio.sleep(0)
    await left.write(wire(b"fine") + struct.pack("<Q", 5))
    frames, _ = await asyncio.wait_for(reader, 5)
    assert bytes(frames[0]) == b"fine"
    with pytest.raises(ProtocolError, match=r"left:1 announced 5 frames"):
        await right.read_message()
    left.close()


@pytest.mark.timeout(30)
@gen_test()
async def test_bytes_over_the_limits_before_framing_end_the_connection_at_the_first_read():
    left, right = pair()
    await left.write(b"hi" + struct.pack("<Q", 5))  # a head of 5 frames behind the hello
    assert await right.read_bytes(2) == b"hi"
    right.frame(Limits(max_frames=2), "left:1")  # no exception here: at the read
    with pytest.raises(ProtocolError, match=r"left:1 announced 5 frames"):
        await right.read_message()
    assert right.closed()
    left.close()
