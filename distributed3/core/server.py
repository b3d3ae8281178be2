"""The substrate every role is built on: ``Server``, ``rpc``, ``ConnectionPool``.

A ``Server`` is a tornado ``TCPServer`` that authenticates each connection,
then reads messages ``{"op": name, **kwargs}`` and answers each with
``{"status": "OK", "result": ...}`` or ``{"status": "error", "exception": e,
"traceback": text}``.  A role declares its whole surface as one dict of
``{op: handler}``; a handler is ``handler(comm, **kwargs)``, plain or ``async``.
``rpc(addr).op(**kwargs)`` sends such a message and returns the result, or
re-raises the remote exception with its original type and the remote
traceback as ``__cause__``.

>>> import asyncio
>>> class Adder(Server):
...     def __init__(self, **kwargs):
...         super().__init__({"add": self.add}, **kwargs)
...     def add(self, comm, x, y):
...         return x + y
>>> async def demo():
...     server = Adder(secret="s3cret")
...     await server.start(port=0)
...     async with rpc(server.address, secret="s3cret") as adder:
...         total = await adder.add(x=1, y=2)
...         try:
...             await adder.add(x=1, y="two")
...         except TypeError as e:
...             error = type(e).__name__
...     await server.close()
...     return total, error
>>> asyncio.run(demo())
(3, 'TypeError')

``connect``, ``read`` and ``write`` come from ``comm.py``; ``distributed3.core`` exports
all of these names.
"""
import asyncio
import functools
import inspect
import logging
import uuid
from collections import Counter, defaultdict

from tornado.tcpserver import TCPServer

from ..exceptions import (
    AuthenticationError,
    CommClosedError,
    ConnectionBrokenError,
    ProtocolError,
    SerializationError,
)
from ..utils import format_address, parse_address
from .admission import Admission, accept_handler
from .channel import serve_many
from .comm import DEFAULT_LIMITS, accept, connect
from .messages import (  # noqa: F401 -- the request/reply helpers, importable from here too
    REPLIED,
    error_message,
    exchange,
    ok_message,
    raise_remote,
    request,
    result_of,
    unpicklable_error,
)
from .security import TLS, normalize_secret
from .sockets import take_over

logger = logging.getLogger(__name__)
_PLAIN = frozenset({dict, list, tuple, str, bytes, int, float, bool, type(None)})

__version__ = "0.1.0"


class Server(TCPServer):
    """A TCP server that dispatches authenticated ``{"op": ...}`` messages to handlers.

    Subclasses pass their ``{op: handler}`` dict and may override
    :meth:`connection_closed`.  Every server answers ``identity`` and keeps
    ``counters`` (messages per op, and ``bytes_in`` received) for introspection.

    >>> async def demo():
    ...     server = Server({"ping": lambda comm: "pong"})
    ...     await server.start(port=0)
    ...     async with rpc(server.address) as r:
    ...         reply = await r.ping(), (await r.identity())["type"]
    ...     await server.close()
    ...     return reply
    >>> asyncio.run(demo())
    ('pong', 'Server')
    """

    def __init__(self, handlers, *, secret=None, tls=None, limits=DEFAULT_LIMITS, name=None):
        self.tls = TLS.coerce(tls)
        super().__init__(
            ssl_options=self.tls.server_context() if self.tls else None,
            max_buffer_size=limits.max_message_bytes,
        )
        self.handlers = {"identity": self.identity, **handlers}
        self.secret = normalize_secret(secret)
        self.admission = Admission(limits.max_connections_per_peer,
                                   limits.max_handshaking_per_peer)
        self.limits = limits
        self.name = name
        self.id = f"{type(self).__name__.lower()}-{uuid.uuid4().hex[:12]}"
        self.address = None
        self.counters = Counter()
        self.comms = set()
        self._closing = False

    def __repr__(self):
        where = format_address(self.address) if self.address else "not started"
        return f"<{type(self).__name__} {where}>"

    def identity(self, comm=None):
        """Type, address, version and name of this server."""
        return {
            "type": type(self).__name__,
            "id": self.id,
            "address": self.address,
            "name": self.name,
            "version": __version__,
        }

    async def start(self, host="127.0.0.1", port=0, sockets=None):
        """Start listening on ``host:port`` (``port=0``: any free port); sets ``address``."""
        # caps that fit the descriptors this process may hold (see core.admission)
        self.admission = Admission.for_this_process(self.limits.max_connections_per_peer,
                                                    self.limits.max_handshaking_per_peer)
        if sockets is not None:
            self.add_sockets(sockets)
        else:
            self.listen(port, host)
        sock = next(iter(self._sockets.values()))
        bound = sock.getsockname()
        self.address = (host if host not in ("", "0.0.0.0", "::") else bound[0], bound[1])
        return self

    def add_sockets(self, sockets):
        """Accept on ``sockets`` (see :func:`~distributed3.core.admission.accept_handler`:
        out of descriptors, it frees some and pauses rather than spinning)."""
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = accept_handler(
                sock, self._handle_connection, self._out_of_descriptors, str(self))

    def _out_of_descriptors(self):
        for stream in self.admission.evict_oldest():
            stream.close()

    async def close(self):
        """Stop listening and close every open connection."""
        self._closing = True
        self.stop()
        for comm in list(self.comms):
            comm.close()
        await asyncio.sleep(0)

    def connection_closed(self, comm):
        """Hook called once when a connection ends, however it ended."""

    def catch_up(self):
        """Hook called before each message is handled: work that must be done before
        the server acts on anything it hears (a worker keeps the results its task
        threads have answered for)."""

    async def handle_stream(self, stream, address):
        stream = take_over(stream)  # plain TCP: read and written by our SocketStream
        host = address[0] if isinstance(address, tuple) else str(address)
        admission = self.admission
        if not admission.admit(host, stream):
            stream.close()
            return
        for evicted in admission.evicted:
            evicted.close()  # their handshakes end with an error, logged quietly
        comm = None
        try:
            comm = await self._handshake(stream, address)
            if comm is not None:
                admission.authenticated(host, stream)
                await self._handle_comm(comm)
        finally:
            admission.left(host, stream, comm is not None)

    async def _handshake(self, stream, address):
        """The authenticated ``Comm`` of a new connection, or ``None`` (it was closed)."""
        try:
            return await accept(stream, address, self.secret, self.limits)
        except (AuthenticationError, ProtocolError, ConnectionBrokenError, TimeoutError) as e:
            log = logger.debug if stream in self.admission.evicted else logger.warning
            log("%s refused a connection from %s: %s", self, address, e)
        except Exception as e:  # never let one peer crash the server
            logger.warning("%s: handshake with %s failed: %r", self, address, e)
        stream.close()
        return None

    async def _handle_comm(self, comm):
        self.comms.add(comm)
        try:
            await self._serve(comm)
        finally:
            self.comms.discard(comm)
            comm.close()
            try:
                self.connection_closed(comm)
            except Exception:
                logger.exception("%s: connection_closed hook failed", self)

    async def _serve(self, comm):
        peer = comm.name
        comm.on_message(functools.partial(self._take_many, comm))
        while not self._closing:
            msg = response = None  # the last ones are not held while the next is awaited
            try:
                msg = await comm.read()
            except SerializationError as e:
                logger.info("%s: unreadable message from %s: %s", self, peer, e)
                await self._reply(comm, error_message(e))
                continue
            except (CommClosedError, ConnectionBrokenError) as e:
                if isinstance(e, ProtocolError):
                    logger.warning("%s: closing connection from %s: %s", self, peer, e)
                return
            self._took_frame(comm)
            if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
                err = ProtocolError(f"malformed message from {peer}: expected a dict with an 'op'")
                await self._reply(comm, error_message(err, ""))
                continue
            if msg["op"] == "many":
                self._serve_many(comm, msg)
                continue
            want_reply = msg.pop("reply", True)
            response = self.dispatch(comm, msg)
            if type(response) is not dict and response is not REPLIED:
                response = await response
            if response is not REPLIED and want_reply and not await self._reply(comm, response):
                return

    def _take_many(self, comm, msg):
        """A ``many`` message handled as it comes, while ``_serve`` waits for the next
        (see Comm.on_message); whether it was one."""
        if type(msg) is not dict or msg.get("op") != "many" or self._closing:
            return False
        self._took_frame(comm)
        self._serve_many(comm, msg)
        return True

    def _took_frame(self, comm):
        self.counters["bytes_in"] += comm.last_nbytes
        self.counters["frames_in"] += 1
        self.catch_up()

    def _serve_many(self, comm, msg):
        self.counters["many"] += 1
        serve_many(self, comm, msg.get("msgs"))

    def dispatch(self, comm, msg):
        """Handle ``msg`` (a dict with an ``op``) from ``comm``: its reply message,
        ``REPLIED`` when the handler sent it itself, or an awaitable of either."""
        op = msg.pop("op")
        self.counters[op] += 1
        handler = self.handlers.get(op)
        if handler is None:
            err = ValueError(f"{self} has no operation {op!r} (asked by "
                             f"{format_address(comm.peer)})")  # fmt: skip
            return error_message(err, "")
        try:
            result = handler(comm, **msg)
        except Exception as e:
            return self._failed(op, comm, e)
        if result is REPLIED:  # the handler answered, or will (a task: from its thread)
            return result
        # inspect.isawaitable asks an ABC, ~1 us for a plain value: a tenth of a worker's
        # loop time per tiny task
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            return self._finish(op, comm, result)
        return ok_message(result)

    async def _finish(self, op, comm, awaitable):
        try:
            result = await awaitable
        except Exception as e:
            return self._failed(op, comm, e)
        return result if result is REPLIED else ok_message(result)

    def _failed(self, op, comm, error):
        logger.debug("%s: op %r from %s failed", self, op, format_address(comm.peer),
                     exc_info=True)  # fmt: skip
        return error_message(error)

    async def _reply(self, comm, response):
        try:
            await comm.write(response)
        except SerializationError as e:
            if response.get("status") == "error":
                response = unpicklable_error(response)
            else:
                response = error_message(e)
            try:
                await comm.write(response)
            except (CommClosedError, ConnectionBrokenError):
                return False
        except (CommClosedError, ConnectionBrokenError):
            return False
        return True


class ConnectionPool:
    """Reusable authenticated connections, keyed by address.

    ``await pool.call(addr, {"op": ...})`` borrows an idle connection (or opens
    one), sends the message, reads the reply and puts the connection back.
    ``pool(addr)`` is an :class:`rpc` proxy that uses this pool.

    >>> pool = ConnectionPool(secret="s3cret")
    >>> pool(("127.0.0.1", 8787))
    <rpc 127.0.0.1:8787>
    """

    def __init__(self, secret=None, timeout=10, limits=DEFAULT_LIMITS, tls=None):
        self.secret = normalize_secret(secret)
        self.tls = TLS.coerce(tls)
        self.timeout = timeout
        self.limits = limits
        self.idle = defaultdict(list)
        self.busy = set()
        self.closed = False

    def __call__(self, address):
        return rpc(address, connection_pool=self)

    def __repr__(self):
        nidle = sum(map(len, self.idle.values()))
        return f"<ConnectionPool idle={nidle} busy={len(self.busy)}>"

    async def connect(self, address):
        """An open connection to ``address``, reused when one is idle."""
        if self.closed:
            raise CommClosedError("connection pool is closed")
        address = parse_address(address)
        idle = self.idle.get(address)
        while idle:
            comm = idle.pop()
            if not comm.closed:
                self.busy.add(comm)
                return comm
        comm = await connect(address, self.secret, self.timeout, self.limits, self.tls)
        if self.closed:
            comm.close()
            raise CommClosedError("connection pool is closed")
        self.busy.add(comm)
        return comm

    def reuse(self, address, comm):
        """Give back a connection after a complete request/reply."""
        self.busy.discard(comm)
        if self.closed or comm.closed:
            comm.close()
        else:
            self.idle[parse_address(address)].append(comm)

    async def call(self, address, msg, timeout=None):
        """Send ``msg`` to ``address`` and return the ``result`` of its reply.

        A reused connection that turns out to be dead is retried once on a
        fresh one; an error reply is re-raised by :func:`raise_remote`.
        """
        address = parse_address(address)
        for attempt in (0, 1):
            reused = bool(self.idle.get(address))
            comm = await self.connect(address)
            try:
                response = await exchange(comm, msg, timeout)
            except ConnectionBrokenError:
                self.busy.discard(comm)
                comm.close()
                if reused and attempt == 0:  # the others idle since then are suspect too
                    for stale in self.idle.pop(address, ()):
                        stale.close()
                    continue
                raise
            except asyncio.TimeoutError:
                self.busy.discard(comm)
                comm.close()
                raise TimeoutError(
                    f"{format_address(address)} did not answer {msg.get('op')!r} "
                    f"within {timeout} s"
                ) from None
            except BaseException:
                self.busy.discard(comm)
                comm.close()
                raise
            self.reuse(address, comm)
            return result_of(response, address)

    async def close(self):
        """Close every connection, idle or busy."""
        self.closed = True
        for comms in self.idle.values():
            for comm in comms:
                comm.close()
        self.idle.clear()
        for comm in list(self.busy):
            comm.close()
        self.busy.clear()


class rpc:
    """Call a server's ops as coroutine methods: ``await rpc(addr).who_has(keys=[...])``.

    Without a ``connection_pool`` it makes a private one, closed by ``close()``
    or ``async with``.  ``timeout`` bounds each call's wait for its reply.
    """

    def __init__(self, address, *, secret=None, tls=None, timeout=None, connection_pool=None):
        self.address = parse_address(address)
        self.timeout = timeout
        self._own = connection_pool is None
        self.connection_pool = connection_pool or ConnectionPool(secret=secret, tls=tls)

    def __repr__(self):
        return f"<rpc {format_address(self.address)}>"

    def __getattr__(self, op):
        if op.startswith("_"):
            raise AttributeError(op)

        async def send(**kwargs):
            return await self.connection_pool.call(
                self.address, {"op": op, **kwargs}, timeout=self.timeout
            )

        send.__name__ = op
        return send

    async def close(self):
        if self._own:
            await self.connection_pool.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
