"""The raw limits in the same run: tornado ping-pong and a plain loopback socket.

Both run a server in a forked child and a client here, with the framing our
comms use (an 8-byte length, then the payload), so they show what the wire and
the event loop cost before any of our code runs.

>>> ping_pong_us(50) > 0 and ping_pong_us(50, polling=True) > 0
True
>>> loopback_mb_per_s(1 << 20, repeat=1) > 0
True
"""
import asyncio
import multiprocessing
import socket
import statistics
import struct
import time

import numpy

from ..client.polling import PollingSelector
from .timing import median_of

_LEN = struct.Struct("<Q")


def _echo_server(sock):
    from tornado.tcpserver import TCPServer

    class Echo(TCPServer):
        async def handle_stream(self, stream, address):
            stream.set_nodelay(True)
            try:
                while True:
                    head = await stream.read_bytes(8)
                    body = await stream.read_bytes(_LEN.unpack(head)[0])
                    await stream.write(head + body)
            except Exception:
                return

    async def main():
        server = Echo()
        server.add_sockets([sock])
        await asyncio.Event().wait()

    asyncio.run(main())


def _listen():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    return sock


def _fork(target, *args):
    proc = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def ping_pong_us(n=1000, payload=100, repeat=1, polling=False):
    """Mean microseconds per round trip of ``payload`` bytes, tornado to tornado (the
    median over ``repeat`` runs of ``n``: one run on these VMs swings by a third).
    With ``polling``, the client's loop polls before it sleeps, as a blocking
    distributed3 call's does (see :mod:`distributed3.client.polling`)."""
    from tornado.iostream import IOStream

    sock = _listen()
    proc = _fork(_echo_server, sock)
    try:

        async def client():
            stream = IOStream(socket.socket())
            await stream.connect(sock.getsockname())
            stream.set_nodelay(True)
            msg = _LEN.pack(payload) + b"x" * payload
            for _ in range(min(n, 100)):  # warm up
                await stream.write(msg)
                await stream.read_bytes(8 + payload)
            runs = []
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(n):
                    await stream.write(msg)
                    head = await stream.read_bytes(8)
                    await stream.read_bytes(_LEN.unpack(head)[0])
                runs.append((time.perf_counter() - start) / n * 1e6)
            stream.close()
            return statistics.median(runs)

        factory = None
        if polling:
            def factory():
                return asyncio.SelectorEventLoop(PollingSelector(wanted=lambda: True))
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(client())
    finally:
        proc.kill()
        sock.close()


def _sink(sock, size, fresh):
    conn, _ = sock.accept()
    conn.setblocking(True)
    view = memoryview(numpy.empty(size, dtype=numpy.uint8))  # huge pages, as ours get
    while True:
        head = conn.recv(8, socket.MSG_WAITALL)
        if len(head) < 8:
            return
        (n,) = _LEN.unpack(head)
        if fresh:  # new memory each time, as for data that is kept (allocated as ours is)
            view = memoryview(numpy.empty(n, dtype=numpy.uint8))
        got = 0
        while got < n:
            got += conn.recv_into(view[got:n])
        conn.sendall(b"k")


def loopback_mb_per_s(size, repeat=3, fresh=False):
    """Median MB/s sending ``size`` bytes to another process over a loopback socket, counted
    until the receiver acknowledges the last byte.  The receiver reads into one buffer
    it reuses, or with ``fresh`` into new memory each time (which a kept copy needs).
    Both ends use numpy memory, as arrays moved by distributed3 do: numpy asks for huge
    pages, which makes the kernel's copies faster than into ``bytearray`` pages."""
    sock = _listen()
    sock.setblocking(True)
    proc = _fork(_sink, sock, size, fresh)
    payload = memoryview(numpy.ones(size, dtype=numpy.uint8))  # as an array being sent is
    try:
        with socket.create_connection(sock.getsockname()) as conn:

            def measure():
                start = time.perf_counter()
                conn.sendall(_LEN.pack(size))
                conn.sendall(payload)
                assert conn.recv(1) == b"k"
                return time.perf_counter() - start

            measure()  # warms up
            seconds = median_of(measure, repeat)
    finally:
        proc.kill()
        sock.close()
    return size / seconds / 1e6
