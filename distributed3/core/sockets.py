"""A connection's plain TCP socket on the event loop, after tornado connected it.

For a plain TCP connection (TLS stays with tornado's ``SSLIOStream``) a
:class:`SocketStream` does the reading and writing itself, with the loop's
``add_reader`` / ``add_writer``: on a socket tornado's server accepted (:func:`adopt`,
before tornado read anything), or that :func:`connect_socket` connected.

* **reading**: the socket stays registered while messages are wanted; each time it is
  readable, ``recv_into`` goes straight into the :class:`~.framing.Framer`'s buffer,
  and a whole message wakes the reader -- or, while the reader waits, goes to
  ``fast`` right there, if it takes it (see :meth:`~.comm.Comm.on_message`).
  tornado's ``read_bytes`` cost two dozen Python calls a message, and as many again,
  with a ``recv`` that found nothing, to ask for the next -- on the way of every
  request and every reply.
  With nobody reading, it stops once a message waits (the peer's sends then stall
  in the kernel, as with any socket nobody reads).
* **writing**: into the socket what it takes now; the rest queued, in order, sent as
  it drains; ``write`` gives a future done once its bytes are all sent.  Big buffers
  are queued as they are, never copied.

It answers the handful of ``IOStream`` calls the handshake and :class:`~.comm.Comm`
make (``read_bytes``, ``write``, ``reading``, ``writing``, ``closed``, ``close``,
``socket``), and
raises tornado's ``StreamClosedError`` (with ``real_error``) as an ``IOStream`` does.

>>> import asyncio, socket
>>> async def demo():
...     a, b = socket.socketpair()
...     a.setblocking(False); b.setblocking(False)
...     left, right = SocketStream(a), SocketStream(b)
...     await left.write(b"hello")
...     data = await right.read_bytes(5)
...     left.close(); right.close()
...     return data
>>> asyncio.run(demo())
b'hello'
"""
import asyncio
import ipaddress
import socket
from collections import deque

from tornado.iostream import IOStream, StreamClosedError

from ..exceptions import ConnectionBrokenError, ProtocolError
from .framing import Framer

__all__ = ["SocketStream", "adopt", "connect_socket", "take_over"]


# s an address of a name may take to answer before the next one is tried: one may be
# silently unreachable (an IPv6 address where IPv6 goes nowhere); the last gets the rest
NEXT_ADDRESS_AFTER = 1.0


async def connect_socket(host, port):
    """A :class:`SocketStream` connected to ``host`` (an IP address, or a name looked up
    without blocking) and ``port``; the ``OSError`` of the last address tried if none
    answers (one silent for ``NEXT_ADDRESS_AFTER`` s gives way to the next)."""
    loop = asyncio.get_running_loop()
    try:
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        found = [(family, (host, port))]
    except ValueError:
        found = [(info[0], info[4]) for info in await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)]  # fmt: skip
    error = OSError(f"no address found for {host}")
    for i, (family, address) in enumerate(found):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(None if i == len(found) - 1 else NEXT_ADDRESS_AFTER):
                await loop.sock_connect(sock, address)
        except OSError as e:  # (TimeoutError too)
            sock.close()
            error = e
            continue
        except BaseException:  # cancelled (a deadline): nothing left open
            sock.close()
            raise
        return SocketStream(sock)
    raise error


def take_over(stream):
    """:func:`adopt` a plain tornado ``IOStream``; any other stream (TLS: tornado's
    ``SSLIOStream``; a :class:`SocketStream` already) as it is."""
    return adopt(stream) if type(stream) is IOStream else stream


def adopt(stream):
    """A :class:`SocketStream` on the socket of tornado's plain ``stream``, which nothing
    has read from yet (just accepted: a connected one may have been); tornado stops
    watching it."""
    sock = stream.socket
    stream.io_loop.remove_handler(sock.fileno())  # what tornado registered (a connect's)
    sock = socket.socket(fileno=sock.detach())
    sock.setblocking(False)  # as it is: a socket made from a descriptor says otherwise
    return SocketStream(sock)


class SocketStream:
    """Reading and writing a connected non-blocking ``sock`` on the running loop (see
    the module's docstring).  Bytes until :meth:`frame`, whole messages after."""

    def __init__(self, sock):
        self.socket = sock
        self.loop = asyncio.get_running_loop()
        self.fd = sock.fileno()
        self.error = None  # the socket's error that closed it (None: we, or the peer's EOF)
        self._unreadable = None  # the framer's error that closed it, for the reader
        self._closed = False
        self._raw = bytearray()  # before framing: bytes received, not read yet
        self._framer = None
        self._waiter = None  # the future a reader waits on
        self._reading = False  # registered with the loop for reading
        self._queue = deque()  # memoryviews to send, in order
        self._accepted = 0  # bytes given to write() since the start
        self._sent = 0  # of them, bytes sent
        self._futures = deque()  # (sent count at which it is done, future) of writes
        self._writing = False  # registered with the loop for writing
        # takes a whole message, (frames, nbytes), that comes while a reader waits, in
        # the I/O callback itself; returns whether it took it (see Comm.on_message)
        self.fast = None

    def __repr__(self):
        return f"<SocketStream fd={self.fd}{' closed' if self._closed else ''}>"

    # -- reading ---------------------------------------------------------------

    def frame(self, limits, peer):
        """From now on, read whole messages (:meth:`read_message`) within ``limits``,
        beginning with the bytes received and not read yet."""
        self._framer = Framer(limits, peer)
        raw, self._raw = self._raw, bytearray()
        try:
            self._framer.feed(raw)
        except ProtocolError as e:  # the first read says so, naming the peer
            self._unreadable = e
            self.close()

    async def read_message(self):
        """The next whole message, ``(frames, nbytes)``; raises ``StreamClosedError``
        once the connection ended with none left, or the ``ProtocolError`` that ended it."""
        ready = self._framer.ready
        while not ready:
            await self._wait()
        return ready.popleft()

    async def read_bytes(self, n, partial=False):
        """``n`` bytes (with ``partial``, 1 to ``n``) -- before :meth:`frame` only."""
        raw = self._raw
        while len(raw) < (1 if partial else n):
            await self._wait()
        data = bytes(raw[:n])
        del raw[:n]
        return data

    def waiting(self):
        """How many whole messages came and were not read yet."""
        return len(self._framer.ready) if self._framer is not None else 0

    def reading(self):
        """Whether a reader waits for more."""
        return self._waiter is not None and not self._waiter.done()

    def _wait(self):
        """A future done once more has come (or raising why it never will)."""
        if self._closed:
            raise self._why()
        if not self._reading:
            self._reading = True
            self.loop.add_reader(self.fd, self._readable)
        waiter = self._waiter = self.loop.create_future()
        return waiter

    def _readable(self):
        framer = self._framer
        try:
            if framer is None:
                got = self._read_raw()
            else:
                got = self._read_framed(framer)
        except ProtocolError as e:  # over the limits: nothing more can be read
            self._unreadable = e
            self.close()
            return
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(e)
            return
        except Exception as e:  # (a MemoryError, say): the reader is told, not left waiting
            self._unreadable = ConnectionBrokenError(
                f"reading from {self._framer.peer if framer else 'the peer'} failed: {e!r}")
            self.close()
            return
        if not got:
            return
        if self.fast is not None and self._waiter is not None and self._hand_over():
            return  # all taken: the reader waits on
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif waiter is None:  # nobody reads: stop until somebody does
            self._reading = False
            self.loop.remove_reader(self.fd)

    def _hand_over(self):
        """While a reader waits: the whole messages, in order, that ``fast`` takes;
        whether it took them all (else the reader gets the rest)."""
        ready, fast = self._framer.ready, self.fast
        while ready:
            message = ready.popleft()
            if not fast(*message):
                ready.appendleft(message)
                return False
            if self._closed:  # it closed the connection: its reader was told
                return True
        return True

    def _read_raw(self):
        data = self.socket.recv(65536)
        if not data:  # the peer closed it
            self.close()
        self._raw += data
        return bool(data)

    def _read_framed(self, framer):
        """Whether a whole message came.  A big payload is read on until it is all in or
        the socket has nothing more, not one ``recv`` per turn of the loop."""
        recv_into = self.socket.recv_into
        while True:
            try:
                n = recv_into(framer.get_buffer())
            except (BlockingIOError, InterruptedError):  # for now: what came is read
                return bool(framer.ready)
            if not n:  # the peer closed it
                self.close()
                return False
            framer.buffer_updated(n)
            if not framer.filling() or framer.ready:  # a whole one waits: read it first
                return bool(framer.ready)

    def _why(self, reading=True):
        """What a reader (or a writer) of the closed stream raises: the framer's error
        (a ``ProtocolError``) to a reader, else ``StreamClosedError``."""
        if reading and self._unreadable is not None:
            return self._unreadable
        return StreamClosedError(real_error=self.error)

    # -- writing ---------------------------------------------------------------

    def writing(self):
        """Whether bytes wait to be sent."""
        return bool(self._queue)

    def write(self, data):
        """Queue ``data`` behind what waits; a future done once it is all sent."""
        if self._closed:
            raise self._why(reading=False)
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        self._queue.append(view)
        self._accepted += view.nbytes
        future = self.loop.create_future()
        self._futures.append((self._accepted, future))
        if not self._writing:
            self._send()
        return future

    def _send(self):
        queue, sock = self._queue, self.socket
        while queue:
            try:
                n = sock.send(queue[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.close(e)
                return
            self._sent += n
            if n < queue[0].nbytes:  # the kernel's buffer is full
                queue[0] = queue[0][n:]
                break
            queue.popleft()
        futures = self._futures
        while futures and futures[0][0] <= self._sent:
            future = futures.popleft()[1]
            if not future.done():
                future.set_result(None)
        if queue and not self._writing:
            self._writing = True
            self.loop.add_writer(self.fd, self._send)
        elif not queue and self._writing:
            self._writing = False
            self.loop.remove_writer(self.fd)

    # -- closing ---------------------------------------------------------------

    def closed(self):
        return self._closed

    def close(self, error=None):
        """Close it; readers and writers waiting raise why (``error``: what broke it)."""
        if self._closed:
            return
        self._closed, self.error = True, error
        if self._reading:
            self.loop.remove_reader(self.fd)
        if self._writing:
            self.loop.remove_writer(self.fd)
        self._reading = self._writing = False
        self.socket.close()
        self._queue.clear()
        waiters = [(self._waiter, True)] if self._waiter is not None else []
        waiters += [(future, False) for _, future in self._futures]
        self._waiter, self._futures = None, deque()
        for future, reading in waiters:
            if reading and self._framer is not None and self._framer.ready:
                if not future.done():  # whole messages came first: they are read first
                    future.set_result(None)
                continue
            if not future.done():
                future.set_exception(self._why(reading))
                future.exception()  # nobody may be there to ask: retrieved
