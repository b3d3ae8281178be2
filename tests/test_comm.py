"""Framing and the handshake, over real loopback sockets."""
import asyncio
import os
import pickle
import socket
import struct

import numpy as np
import pytest

from distributed3 import AuthenticationError, ConnectionBrokenError, ProtocolError
from distributed3.core.comm import Limits, connect
from distributed3.core.handshake import _SERVER_HELLO
from distributed3.core.server import Server, rpc
from distributed3.testing import gen_test


def echo_server(**kwargs):
    return Server({"echo": lambda comm, x=None: x}, **kwargs)


@gen_test()
async def test_round_trip_with_and_without_secret():
    for secret in (None, "s3cret", b"\x00binary\xff"):
        server = await echo_server(secret=secret).start(port=0)
        try:
            comm = await connect(server.address, secret=secret)
            await comm.write({"op": "echo", "x": [1, "two", {3: 4.0}]})
            assert await comm.read() == {"status": "OK", "result": [1, "two", {3: 4.0}]}
            comm.close()
        finally:
            await server.close()


@gen_test()
async def test_big_array_over_loopback_arrives_equal_and_writable():
    server = await echo_server(secret="s").start(port=0)
    try:
        x = np.random.default_rng(0).random(6_000_000)  # 48 MB
        async with rpc(server.address, secret="s") as r:
            y = await r.echo(x=x)
        assert y.shape == x.shape and (y == x).all()
        assert y.flags.writeable
    finally:
        await server.close()


@gen_test()
async def test_wrong_and_missing_secrets(caplog):
    server = await echo_server(secret="right").start(port=0)
    try:
        with pytest.raises(AuthenticationError, match="rejected our secret"):
            await connect(server.address, secret="wrong")
        with pytest.raises(AuthenticationError, match="requires a secret"):
            await connect(server.address)
        assert "presented a wrong secret" in caplog.text
        async with rpc(server.address, secret="right") as r:  # others still served
            assert await r.echo(x=1) == 1
    finally:
        await server.close()
    open_server = await echo_server().start(port=0)
    try:  # a server that cannot prove the secret is not trusted by a client that has one
        with pytest.raises(AuthenticationError, match="does not know the cluster's secret"):
            await connect(open_server.address, secret="right")
    finally:
        await open_server.close()


@gen_test()
async def test_crafted_pickle_before_authentication_never_runs(tmp_path):
    """The attack the handshake exists for: a pickle that would create a file."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps({"op": "echo", "x": Exploit()}, protocol=5)
    assert marker.exists() is False
    server = await echo_server(secret="s").start(port=0)
    loop = asyncio.get_running_loop()

    def attack(skip_handshake):
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.recv(_SERVER_HELLO.size)
            frame = struct.pack("<QQ", 1, len(payload)) + payload
            if skip_handshake:  # message straight away, as if there were no handshake
                sock.sendall(frame * 3)
            else:  # a well-formed hello with a made-up MAC, then the message
                hello = b"D3" + bytes([1, 1]) + os.urandom(64)
                sock.sendall(hello + frame)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass

    try:
        for skip in (True, False):
            await loop.run_in_executor(None, attack, skip)
        async with rpc(server.address, secret="s") as r:
            assert await r.echo(x="still serving") == "still serving"
        assert not marker.exists()
    finally:
        await server.close()


@gen_test()
async def test_limits_checked_before_allocation():
    limits = Limits(max_frames=4, max_frame_bytes=1000, max_message_bytes=1500)
    server = await echo_server(limits=limits).start(port=0)
    try:
        for header in (struct.pack("<Q", 10**6),               # too many frames
                       struct.pack("<QQ", 1, 2**60),            # one absurd frame
                       struct.pack("<QQQ", 2, 900, 900)):      # total over the limit
            comm = await connect(server.address)
            comm.stream.write(header)
            with pytest.raises(ConnectionBrokenError):  # the server closes at once
                await asyncio.wait_for(comm.read(), 5)
    finally:
        await server.close()
    # a client with small limits refuses an oversized reply, before allocating it
    server = await echo_server().start(port=0)
    try:
        comm = await connect(server.address, limits=limits)
        await comm.write({"op": "echo", "x": b"x" * 2000})
        with pytest.raises(ProtocolError, match="limit 1000"):
            await comm.read()
        assert comm.closed
    finally:
        await server.close()


@gen_test()
async def test_a_message_too_big_to_allocate_drops_only_its_peer(caplog):
    # within the limits, beyond the machine: 1 TiB cannot be had, the server says so
    limits = Limits(max_frame_bytes=2**41, max_message_bytes=2**41)
    server = await echo_server(limits=limits).start(port=0)
    try:
        greedy = await connect(server.address)
        greedy.stream.write(struct.pack("<QQ", 1, 2**40))
        with pytest.raises(ConnectionBrokenError):  # the server closes that connection
            await asyncio.wait_for(greedy.read(), 5)
        assert "more than this process can allocate" in caplog.text
        honest = await connect(server.address)  # and keeps serving everyone else
        await honest.write({"op": "echo", "x": 1})
        assert await honest.read() == {"status": "OK", "result": 1}
    finally:
        await server.close()


@gen_test()
async def test_handshake_deadline_drops_a_silent_peer():
    server = await echo_server(secret="s", limits=Limits(handshake_timeout=0.2)).start(port=0)
    loop = asyncio.get_running_loop()

    def silent():
        with socket.create_connection(server.address, timeout=5) as sock:
            data = sock.recv(1024)  # the hello
            assert data.startswith(b"D3")
            return sock.recv(1024)  # then b"" when the server gives up on us

    try:
        assert await loop.run_in_executor(None, silent) == b""
    finally:
        await server.close()


@gen_test()
async def test_not_a_distributed3_server():
    async def handle(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b" " * 64)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProtocolError, match="not a distributed3 server"):
            await connect(("127.0.0.1", port))
    finally:
        srv.close()


@gen_test()
async def test_nothing_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionBrokenError, match=f"could not connect to 127.0.0.1:{port}"):
        await connect(("127.0.0.1", port))


def test_a_big_receive_buffer_costs_memory_only_as_bytes_arrive():
    """A peer may announce a message up to the limits and then send little of it: the
    buffer for it must not be zero-filled or committed up front."""
    import psutil

    from distributed3.core.framing import allocate

    process = psutil.Process()
    before = process.memory_info().rss
    buf = allocate(512 << 20)
    grown = process.memory_info().rss - before
    assert len(memoryview(buf).cast("B")) == 512 << 20
    # zero-filling it, as committing it, would touch every page: the RSS would grow by 512 MiB
    assert grown < 64 << 20, f"{grown} bytes committed for an empty 512 MiB buffer"
    memoryview(buf).cast("B")[:4096] = b"x" * 4096  # writable, as read_into needs
    del buf


def _listener(banner):
    """A plain TCP server on a free loopback port that sends ``banner`` (or nothing) to
    each connection and keeps it open."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    held = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)
            if banner:
                conn.sendall(banner)

    threading.Thread(target=serve, daemon=True).start()
    return sock


@gen_test()
async def test_a_port_that_is_not_a_center_is_named_with_what_it_said():
    ssh = _listener(b"SSH-2.0-OpenSSH_9.2\r\n")
    quiet = _listener(None)
    try:
        with pytest.raises(ProtocolError, match=r"is not a distributed3 server: it said "
                                                r"b'SSH-2.0-OpenSSH_9.2\\r\\n'"):  # fmt: skip
            await connect(ssh.getsockname(), timeout=5)
        with pytest.raises(TimeoutError, match="it sent nothing .*as HTTP does"):
            await connect(quiet.getsockname(), timeout=0.3)
    finally:
        ssh.close()
        quiet.close()


def test_a_message_of_more_frames_than_a_peer_takes_fails_at_its_sender():
    """Sent, it would only break the connection (the peer drops it), and its sender
    would see 'connection reset'; here the sender is told why."""
    import numpy as np

    from distributed3 import SerializationError
    from distributed3.core.comm import Comm, Limits

    comm = Comm(None, ("127.0.0.1", 9), limits=Limits(max_frames=3))
    assert len(comm.encode([np.zeros(200), np.ones(200)])[0]) == 1  # 3 frames: one write
    with pytest.raises(SerializationError, match=r"4 frames \(3 buffers of 1,024 bytes or "
                                                 r"more\) is more than a peer takes \(3\)"):
        comm.encode([np.zeros(200), np.ones(200), np.ones(300)])


async def comm_pair():
    """Two ends of one authenticated plain TCP connection: ``(client, server)``."""
    from tornado.netutil import bind_sockets
    from tornado.tcpserver import TCPServer

    from distributed3.core.comm import accept

    accepted = asyncio.get_running_loop().create_future()

    class Accept(TCPServer):
        async def handle_stream(self, stream, address):
            accepted.set_result(await accept(stream, address, secret=b"s"))

    sockets = bind_sockets(0, "127.0.0.1")
    server = Accept()
    server.add_sockets(sockets)
    client = await connect(("127.0.0.1", sockets[0].getsockname()[1]), secret=b"s")
    return client, await accepted, server


@pytest.mark.timeout(30)
@gen_test()
async def test_on_message_takes_what_comes_while_the_reader_waits(caplog):
    """The handler takes a message in the I/O callback; one it declines, or that cannot
    be deserialized, goes to read(); a handler that raises ends the connection."""
    from distributed3 import CommClosedError, SerializationError

    client, peer, server = await comm_pair()
    taken = []
    client.on_message(lambda msg: msg != "declined" and not taken.append(msg))
    reader = asyncio.ensure_future(client.read())
    await asyncio.sleep(0)
    await peer.write({"x": 1})
    await peer.write([2])
    deadline = asyncio.get_running_loop().time() + 5
    while len(taken) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)
    assert taken == [{"x": 1}, [2]] and not reader.done()
    await peer.write("declined")
    assert await reader == "declined"
    reader = asyncio.ensure_future(client.read())
    await asyncio.sleep(0)
    bad = pickle.dumps(1)[:-1]  # cut short: no STOP opcode
    await peer.stream.write(struct.pack("<QQ", 1, len(bad)) + bad)
    with pytest.raises(SerializationError, match="could not deserialize a message from"):
        await reader
    client.on_message(lambda msg: 1 / 0)
    reader = asyncio.ensure_future(client.read())
    await asyncio.sleep(0)
    await peer.write("boom")
    with pytest.raises(CommClosedError):
        await reader
    assert "handling a message from" in caplog.text and "ZeroDivisionError" in caplog.text
    peer.close()
    server.stop()
