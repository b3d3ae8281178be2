"""Framing and authentication on a tornado IOStream: ``connect``, ``Comm.read``, ``Comm.write``.

Wire format (everything little-endian)::

    handshake, raw bytes, nothing unpickled:
      server -> client   b"D3" version:u8 mode:u8 nonce_s:32        mode 1 = secret required
      client -> server   b"D3" version:u8 mode:u8 nonce_c:32 mac_c:32
      server -> client   status:u8 mac_s:32                          0 OK, 1 bad secret, 2 no secret
        mac_c = HMAC-SHA256(secret, b"distributed3 client" + nonce_s + nonce_c)
        mac_s = HMAC-SHA256(secret, b"distributed3 server" + nonce_c + nonce_s)
      Each side checks the other's MAC, so both prove the secret (mutual).  With no
      secret on either side the MACs are zeros and nothing is proven.

    then messages, each a list of frames:
      nframes:u64  length:u64 * nframes  frame bytes...
      frame 0 is a pickled header (the op and its arguments), the others are
      out-of-band buffers (see ``protocol.py``).

The reader checks the frame count, each length and their sum against ``Limits``
before it allocates anything, then reads the whole payload into one
preallocated writable buffer (arrays built over it are writable, not copies);
a large one is left uninitialised, so the kernel commits it only as bytes arrive.

>>> import asyncio
>>> from tornado.tcpserver import TCPServer
>>> class Echo(TCPServer):
...     async def handle_stream(self, stream, address):
...         comm = await accept(stream, address, secret=b"s3cret")
...         await comm.write(await comm.read())
>>> async def demo():
...     server = Echo(); sock = server.listen(0, "127.0.0.1")
...     port = list(server._sockets.values())[0].getsockname()[1]
...     comm = await connect(("127.0.0.1", port), secret=b"s3cret")
...     await comm.write({"op": "echo", "x": 1})
...     reply = await comm.read()
...     comm.close(); server.stop()
...     return reply
>>> asyncio.run(demo())
{'op': 'echo', 'x': 1}
"""
import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import struct
from dataclasses import dataclass

from tornado.iostream import SSLIOStream, StreamClosedError
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.tcpclient import TCPClient

from ..exceptions import (
    CommClosedError,
    ConnectionBrokenError,
    ProtocolError,
    SerializationError,
)
from ..utils import format_address, parse_address
from .messages import error_message, unpicklable_error
from .protocol import IN_BAND_BYTES, dumps, loads
from .handshake import NONCE, client_handshake, server_handshake, silence
from .security import TLS, normalize_secret

logger = logging.getLogger(__name__)

_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class Limits:
    """Bounds checked on every incoming message before any allocation.

    >>> Limits().max_frames
    100000
    """

    max_frames: int = 100_000
    max_frame_bytes: int = 2**34  # 16 GiB: one array
    max_message_bytes: int = 2**35  # 32 GiB: one message
    handshake_timeout: float = 10.0
    max_connections_per_peer: int = 1024  # authenticated, per peer host (see admission)
    max_handshaking_per_peer: int = 64  # still in their handshake: the oldest make room


DEFAULT_LIMITS = Limits()


def check_frames(frames, limits):
    """Raise ``SerializationError`` if a message of ``frames`` has more than a peer with
    ``limits`` takes: it would drop the connection, and its sender would only see it
    broken.

    >>> check_frames([b"header", b"buffer"], Limits(max_frames=1))
    Traceback (most recent call last):
    distributed3.exceptions.SerializationError: a message of 2 frames (1 buffer of 1,024 bytes or more) is more than a peer takes (1): put the data in fewer, bigger arrays, or send it in parts
    """
    if len(frames) > limits.max_frames:
        n = len(frames) - 1
        raise SerializationError(
            f"a message of {len(frames):,} frames ({n:,} buffer{'s' if n != 1 else ''} of "
            f"{IN_BAND_BYTES:,} bytes or more) is more than a peer takes "
            f"({limits.max_frames:,}): put the data in fewer, bigger arrays, or send it "
            "in parts"
        )


class Comm:
    """One authenticated connection: ``await comm.write(msg)``, ``msg = await comm.read()``.

    Made by :func:`connect` (client side) or :func:`accept` (server side).
    ``peer`` is the other side's address, used in every error message.
    """

    def __init__(self, stream, peer, limits=DEFAULT_LIMITS):
        self.stream = stream
        self.peer = peer
        self.name = format_address(peer)  # for messages: made once, not per read
        self.limits = limits
        self._closed_by_us = False
        self._pending = bytearray()  # bytes read past the end of the last message
        self.last_nbytes = 0  # payload bytes of the last message read

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<Comm to {self.name} {state}>"

    @property
    def closed(self):
        return self._closed_by_us or self.stream.closed()

    def close(self):
        """Close the connection; later reads and writes raise ``CommClosedError``."""
        self._closed_by_us = True
        self.stream.close()

    def _broken(self, exc=None):
        if self._closed_by_us:
            return CommClosedError(f"connection to {self.name} was closed by us")
        why = f": {exc}" if exc and str(exc) else ""
        return ConnectionBrokenError(
            f"connection to {self.name} was closed by the peer{why}"
        )

    def encode(self, msg):
        """``(buffers, payload bytes)``: ``msg`` as it goes on the wire, a head of lengths
        then its frames."""
        try:
            frames = dumps(msg)
        except Exception as e:
            raise SerializationError(
                f"could not serialize a message for {self.name}: "
                f"{type(e).__name__}: {e}"
            ) from e
        check_frames(frames, self.limits)
        lengths = [memoryview(f).nbytes for f in frames]
        head = struct.pack(f"<Q{len(frames)}Q", len(frames), *lengths)
        nbytes = sum(lengths)
        if nbytes < _COALESCE:  # one send, one segment: small messages are latency
            return [b"".join([head, *frames])], nbytes
        return [head, *frames], nbytes  # big frames go as they are, never copied

    async def write(self, msg):
        """Serialize ``msg`` and send it; returns the number of payload bytes."""
        if self.closed:
            raise self._broken()
        buffers, nbytes = self.encode(msg)
        buffers = self.send_direct(buffers)
        try:
            for buf in buffers[:-1]:
                self.stream.write(buf)
            if buffers:
                await self.stream.write(buffers[-1])
        except StreamClosedError as e:
            raise self._broken(e.real_error) from None
        except ssl.SSLError as e:
            self.close()
            raise ConnectionBrokenError(
                f"TLS error on the connection to {self.name}: {e}"
            ) from None
        return nbytes

    def send_nowait(self, msg):
        """On the loop: serialize ``msg`` and send it without waiting -- into the socket
        what it takes at once, the rest queued behind tornado's earlier writes.  A broken
        connection is left for the reader to report; raises ``SerializationError``."""
        buffers, _ = self.encode(msg)
        for buf in self.send_direct(buffers):
            self.write_soon(buf)

    def write_soon(self, buf):
        """On the loop: queue ``buf`` behind the writes before it; a closed stream takes
        nothing, and its reader says why."""
        try:
            self.stream.write(buf)
        except StreamClosedError:
            pass

    def answer(self, msg):
        """On the loop: send the reply ``msg`` without waiting; one that cannot be
        serialized goes as the error that says so (see :meth:`send_nowait`)."""
        try:
            self.send_nowait(msg)
        except SerializationError as e:
            fallback = unpicklable_error(msg) if msg.get("status") == "error" else None
            self.send_nowait(fallback or error_message(e, ""))

    def prepare(self, msg):
        """A reply ``msg`` encoded in a task thread for :meth:`send_prepared`; ``None``
        when it cannot be serialized (the loop then answers with what it can send)."""
        try:
            return self.encode(msg)[0]
        except SerializationError:
            return None

    def send_prepared(self, buffers, loop, now=True):
        """Send what :meth:`prepare` made, from a task thread (see :meth:`send_from_thread`);
        one reply on this connection: always ``now``."""
        self.send_from_thread(buffers, loop)

    def send_from_thread(self, buffers, loop):
        """Send the ``buffers`` of :meth:`encode` from a thread other than ``loop``'s.

        Straight into the socket when it takes them whole at once -- the way a
        worker's task thread answers without waking the loop first; otherwise, or
        for what the socket did not take, through ``loop``.  Only for a connection
        that nothing else writes to meanwhile.
        """
        buffers = self.send_direct(buffers)
        if buffers:
            loop.call_soon_threadsafe(self._write_later, buffers)

    def send_direct(self, buffers):
        """What is left of ``buffers`` once the socket took what it takes at once of a
        small message, past tornado's buffers (which cost more than the send itself).
        Only on plain TCP with nothing queued before it; a broken socket takes nothing
        here, and tornado's own write then says what broke."""
        stream, sock = self.stream, self.stream.socket
        if (len(buffers) != 1 or sock is None or isinstance(stream, SSLIOStream)
                or self.closed or stream.writing()):  # fmt: skip
            return buffers
        try:
            sent = sock.send(buffers[0])
        except OSError:
            return buffers
        return [memoryview(buffers[0])[sent:]] if sent < len(buffers[0]) else []

    def _write_later(self, buffers):
        for buf in buffers:
            self.write_soon(buf)

    async def _more(self, need):
        """Read until ``need`` bytes are buffered here; whatever the stream has, at once.

        Taking all that is there in one call leaves tornado's buffer empty, so the
        socket stays registered for reading between messages instead of being
        unregistered and registered again for each one.
        """
        pending = self._pending
        while len(pending) < need:
            pending += await self.stream.read_bytes(_READ_CHUNK, partial=True)

    async def read(self):
        """Receive one message; checks its sizes against ``limits`` before allocating."""
        peer = self.name
        limits = self.limits
        try:
            await self._more(8)
            pending = self._pending
            (n,) = _U64.unpack_from(pending)
            if not 0 < n <= limits.max_frames:
                raise ProtocolError(f"{peer} announced {n} frames (limit {limits.max_frames})")
            head = 8 + 8 * n
            await self._more(head)
            lengths = struct.unpack_from(f"<{n}Q", pending, 8)
            total = sum(lengths)
            big = max(lengths)
            if big > limits.max_frame_bytes:
                raise ProtocolError(
                    f"{peer} announced a frame of {big} bytes (limit {limits.max_frame_bytes})"
                )
            if total > limits.max_message_bytes:
                raise ProtocolError(
                    f"{peer} announced a message of {total} bytes "
                    f"(limit {limits.max_message_bytes})"
                )
            self.last_nbytes = total
            try:
                buf = _allocate(total)
            except MemoryError:
                raise ProtocolError(
                    f"{peer} announced a message of {total} bytes, more than this process "
                    "can allocate"
                ) from None
            have = min(len(pending) - head, total)
            with memoryview(pending) as view:  # released before pending shrinks
                buf[:have] = view[head : head + have]
            del pending[: head + have]
            if have < total:  # the rest goes straight from the socket into place
                await self.stream.read_into(memoryview(buf)[have:])
        except StreamClosedError as e:
            raise self._broken(e.real_error) from None
        except ssl.SSLError as e:  # a TLS alert, e.g. the server wanted our certificate
            self.close()
            raise ConnectionBrokenError(f"TLS error on the connection to {peer}: {e}") from None
        except ProtocolError:
            self.close()
            raise
        view = memoryview(buf)
        frames, start = [], 0
        for length in lengths:
            frames.append(view[start : start + length])
            start += length
        try:
            return loads(frames)
        except Exception as e:
            raise SerializationError(
                f"could not deserialize a message from {peer}: {type(e).__name__}: {e}"
            ) from e


_READ_CHUNK = 1 << 16
_LAZY_ALLOCATION = 1 << 20
_COALESCE = 1 << 16


def _allocate(nbytes):
    """A writable buffer of ``nbytes``; big ones are left uninitialised.

    ``bytearray(n)`` would zero-fill every page up front, so a peer announcing
    a huge message and sending little of it would cost memory and time.  An
    uninitialised numpy buffer is committed by the kernel only as bytes arrive,
    and numpy asks for huge pages for it: receiving 100 MB into one ran at
    ~2.2 GB/s here against ~1.2 GB/s into an anonymous ``mmap``.  (numpy is
    imported on the first big message, so processes that never get one start
    without it.)
    """
    if nbytes < _LAZY_ALLOCATION:
        return bytearray(nbytes)
    import numpy

    return numpy.empty(nbytes, dtype=numpy.uint8)


def _tune(stream):
    sock = stream.socket
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


async def _with_deadline(awaitable, timeout, what, peer):
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result, and
    # drops the cancellation, when both come at once (a worker told to stop just as
    # its connection to the center opened then went on to wait for the handshake)
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise TimeoutError(
            f"{what} with {format_address(peer)} did not finish within {timeout} s"
        ) from None


def _closed_in_handshake(peer, error, hint=""):
    why = error.real_error
    if isinstance(why, ssl.SSLError):
        return ConnectionBrokenError(f"TLS handshake with {format_address(peer)} failed: {why}")
    return ConnectionBrokenError(
        f"{format_address(peer)} closed the connection during the handshake{hint}"
    )


async def accept(stream, address, secret=None, limits=DEFAULT_LIMITS):
    """Server side of the handshake on a freshly accepted stream; returns a ``Comm``.

    Raises ``AuthenticationError`` (after telling the peer) when the peer does not
    prove the secret, ``ProtocolError`` for a peer that does not speak our protocol,
    ``TimeoutError`` when it is too slow.  The caller closes the stream on error.
    """
    secret = normalize_secret(secret)
    peer = address if isinstance(address, tuple) else ("?", 0)
    peer = (peer[0], peer[1])
    _tune(stream)
    nonce_s = os.urandom(NONCE)
    mode = 1 if secret else 0

    try:
        await _with_deadline(server_handshake(stream, peer, secret, nonce_s, mode),
                             limits.handshake_timeout, "handshake", peer)  # fmt: skip
    except StreamClosedError as e:
        raise _closed_in_handshake(peer, e) from None
    return Comm(stream, peer, limits)


class LiteralResolver(Resolver):
    """Takes an IP address as it is and asks the system (in a thread) only for names:
    the workers and the center announce IP addresses, and a thread hand-off costs a
    connection a third of its cost (0.55 ms of CPU a connection before, 0.38 ms now)."""

    def initialize(self):
        self.names = DefaultLoopResolver()

    async def resolve(self, host, port, family=socket.AF_UNSPEC):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return await self.names.resolve(host, port, family)
        if ip.version == 6:
            return [(socket.AF_INET6, (host, port, 0, 0))]
        return [(socket.AF_INET, (host, port))]


_tcp_client = TCPClient(resolver=LiteralResolver())


async def connect(address, secret=None, timeout=10, limits=DEFAULT_LIMITS, tls=None):
    """Open an authenticated connection to a distributed3 server; returns a ``Comm``.

    Raises ``ConnectionBrokenError`` when nothing listens there or TLS fails,
    ``TimeoutError`` when it does not answer in ``timeout`` seconds and
    ``AuthenticationError`` when either side fails to prove the secret.
    ``tls`` (a :class:`~distributed3.core.security.TLS`) encrypts the connection.
    """
    secret = normalize_secret(secret)
    tls = TLS.coerce(tls)
    peer = parse_address(address)
    name = format_address(peer)
    ssl_options = tls.client_context() if tls else None
    try:
        stream = await _with_deadline(
            _tcp_client.connect(peer[0], peer[1], ssl_options=ssl_options,
                                max_buffer_size=limits.max_message_bytes),  # fmt: skip
            timeout, "connecting", peer,
        )
    except (StreamClosedError, OSError) as e:
        why = e.real_error if isinstance(e, StreamClosedError) and e.real_error else e
        if isinstance(why, ssl.SSLError):
            raise ConnectionBrokenError(f"TLS handshake with {name} failed: {why}") from None
        raise ConnectionBrokenError(f"could not connect to {name}: {why}") from None
    _tune(stream)

    received = bytearray()  # the server's first bytes, for the errors below
    try:
        await _with_deadline(client_handshake(stream, name, secret, received), timeout,
                             "handshake", peer)  # fmt: skip
    except StreamClosedError as e:
        stream.close()
        raise _closed_in_handshake(peer, e, "" if tls else " (does it require TLS?)") from None
    except TimeoutError as e:
        stream.close()
        hint = " (does it require TLS?)" if not tls else ""
        raise TimeoutError(f"{e}{silence(received)}{hint}") from None
    except ssl.SSLError as e:  # TLS 1.3: the server's refusal comes with its first bytes
        stream.close()
        raise ConnectionBrokenError(f"TLS handshake with {name} failed: {e}") from None
    except BaseException:
        stream.close()
        raise
    return Comm(stream, peer, limits)


async def read(comm):
    """Receive one message from ``comm`` (same as ``comm.read()``)."""
    return await comm.read()


async def write(comm, msg):
    """Send one message on ``comm`` (same as ``comm.write(msg)``)."""
    return await comm.write(msg)
