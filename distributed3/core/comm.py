"""A connection's messages and its authentication: ``connect``, ``accept``, ``Comm.read``,
``Comm.write``.

tornado's servers accept connections and its ``SSLIOStream`` carries TLS ones; a
plain TCP connection is read and written by a :class:`~.sockets.SocketStream`, and
what comes in is cut into messages by a :class:`~.framing.Framer`.

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
before it allocates anything; a message's frames lie in one writable buffer of
its own (arrays built over it are writable, not copies), into which a large
payload is read straight from the socket; a large one is left uninitialised,
so the kernel commits it only as bytes arrive (see framing.py).

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
import functools
import ipaddress
import logging
import os
import socket
import ssl
import struct

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
from .framing import DEFAULT_LIMITS, Framer, Limits
from .handshake import NONCE, client_handshake, server_handshake, silence
from .messages import error_message, unpicklable_error
from .protocol import IN_BAND_BYTES, dumps, loads
from .security import TLS, normalize_secret
from .sockets import SocketStream, connect_socket, take_over

logger = logging.getLogger(__name__)


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
        if isinstance(stream, SocketStream):  # it frames what it reads
            stream.frame(limits, self.name)
            self._framer = None
        else:  # tornado's TLS stream: we frame what it reads
            self._framer = Framer(limits, self.name)
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
        what it takes at once, the rest queued behind the stream's earlier writes.  A broken
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
        small message, past the stream's queue (and, from a task thread, without the
        loop).  Only on plain TCP with nothing queued before it; a broken socket takes
        nothing here, and the stream's own write then says what broke."""
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

    async def read(self):
        """Receive one message; its sizes are checked against ``limits`` before anything
        is allocated for it (see framing.py)."""
        try:
            if self._framer is None:  # plain TCP: our SocketStream frames as it reads
                frames, nbytes = await self.stream.read_message()
            else:
                frames, nbytes = await self._read_tls()
        except StreamClosedError as e:
            raise self._broken(e.real_error) from None
        except ssl.SSLError as e:  # a TLS alert, e.g. the server wanted our certificate
            self.close()
            raise ConnectionBrokenError(f"TLS error on the connection to {self.name}: {e}") from None
        except ProtocolError:
            self.close()
            raise
        self.last_nbytes = nbytes
        try:
            return loads(frames)
        except Exception as e:
            raise SerializationError(
                f"could not deserialize a message from {self.name}: {type(e).__name__}: {e}"
            ) from e

    def on_message(self, handler):
        """Have ``handler(msg)`` take each message that comes while a reader waits, in
        the loop's I/O callback itself: no turn of the loop between the bytes and the
        handler, nor the reader's wake-up.  It returns whether it took ``msg``; one it
        did not, or that cannot be deserialized, goes to ``read()`` as usual, and so
        does everything that comes while no reader waits (the reader is busy with an
        earlier message: the order holds).  Plain TCP only; a no-op on TLS."""
        if isinstance(self.stream, SocketStream):
            self.stream.fast = functools.partial(self._fast, handler)

    def _fast(self, handler, frames, nbytes):
        try:
            msg = loads(frames)
        except Exception:  # read() says what is wrong with it
            return False
        self.last_nbytes = nbytes
        try:
            return handler(msg)
        except Exception:  # as a reader that raised would: the connection ends
            logger.exception("%s: handling a message from %s failed", self, self.name)
            self.close()
            return True

    async def _read_tls(self):
        """The next message off tornado's TLS stream, through our framer."""
        framer = self._framer
        while not framer.ready:
            framer.buffer_updated(await self.stream.read_into(framer.get_buffer(), partial=True))
        return framer.ready.popleft()


_COALESCE = 1 << 16


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
    stream = take_over(stream)  # plain TCP: our SocketStream from now on
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
    if tls:
        opening = _tcp_client.connect(peer[0], peer[1], ssl_options=tls.client_context(),
                                      max_buffer_size=limits.max_message_bytes)  # fmt: skip
    else:  # not through tornado: it would start reading before our stream takes over
        opening = connect_socket(peer[0], peer[1])
    try:
        stream = await _with_deadline(opening, timeout, "connecting", peer)
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
