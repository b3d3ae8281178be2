"""Many requests in flight on one connection, sent and answered together.

A client's :class:`Channel` queues its requests and, once per turn of the event
loop, sends all that are queued as one message::

    {"op": "many", "msgs": [(id, frames), ...]}

Each request is pickled on its own (``frames``, see :mod:`.protocol`), so one that
cannot be read fails alone.  The server handles each as if it had come alone, all at
once, and answers with messages ``[(id, frames), ...]``: through a :class:`ReplyBox`,
which sends the replies that are ready together -- those made in one turn of the
server's loop, and those that task threads make while others are still running.
A request that is the only one open is answered at once, from its thread.

A request on an idle channel leaves at once.  A single request therefore costs one
frame each way, as a plain request does, and a thousand small ones cost a few frames
instead of two thousand.

>>> import asyncio
>>> from .server import Server
>>> async def demo():
...     server = await Server({"add": lambda comm, x, y: x + y}).start(port=0)
...     channel = await Channel.open(server.address)
...     totals = await asyncio.gather(*[channel.call({"op": "add", "x": i, "y": 1})
...                                     for i in range(100)])
...     frames = server.counters["many"]  # the first alone, the 99 made meanwhile together
...     channel.close(); await server.close()
...     return totals[:3], len(totals), frames
>>> asyncio.run(demo())
([1, 2, 3], 100, 2)
"""
import asyncio
import itertools
import logging
import pickle
import threading

from ..exceptions import CommClosedError, ConnectionBrokenError, ProtocolError, SerializationError
from .comm import DEFAULT_LIMITS, check_frames, connect
from .messages import REPLIED, error_message, result_of, unpicklable_error
from .protocol import dumps, loads

logger = logging.getLogger(__name__)

__all__ = ["Channel", "Channels", "ReplyBox", "SubComm", "pack", "unpack", "serve_many"]

_OUT_OF_BAND = 1 << 16  # frames this big travel beside the outer pickle, not inside it


def pack(msg):
    """``msg`` pickled on its own, as an entry of a ``many`` message (big buffers stay
    out of band); raises ``SerializationError``.

    >>> unpack(pack({"x": 1}), "peer")
    {'x': 1}
    """
    try:
        frames = dumps(msg)
    except Exception as e:
        raise SerializationError(f"{type(e).__name__}: {e}") from e
    if len(frames) == 1 and len(frames[0]) < _OUT_OF_BAND:  # the usual small request
        return frames
    check_frames(frames, DEFAULT_LIMITS)
    return [frames[0], *map(_entry_buffer, frames[1:])]


def _entry_buffer(frame):
    """A buffer frame of :func:`~.protocol.dumps` as the ``many`` message pickles it:
    a small one in the pickle, as ``bytes``; a big one out of band, as a
    ``PickleBuffer`` over the object whose memory it is, never over the memoryview
    itself -- a PickleBuffer holding a memoryview's export crashes Python 3.11 when
    the garbage collector breaks a cycle that holds them (CPython gh-77894).

    >>> import numpy as np
    >>> from distributed3.core.protocol import dumps
    >>> array = np.ones(10_000)
    >>> type(_entry_buffer(dumps(np.ones(1000))[1])).__name__
    'bytes'
    >>> memoryview(_entry_buffer(dumps(array)[1])).obj is array
    True
    """
    view = memoryview(frame)
    if view.nbytes < _OUT_OF_BAND:
        return bytes(view)
    base = frame
    while type(base) is memoryview:  # down to what owns the memory (an object's own
        base = base.obj  # reduce may hand out a memoryview of its bytearray)
    if memoryview(base).nbytes == view.nbytes:
        return pickle.PickleBuffer(base)
    return bytes(view)  # a part of something bigger: copied rather than exported


def unpack(frames, peer):
    """The message of one entry; ``SerializationError`` naming ``peer`` if unreadable."""
    try:
        return loads(frames)
    except Exception as e:
        raise SerializationError(
            f"could not deserialize a message from {peer}: {type(e).__name__}: {e}"
        ) from e


class Channel:
    """A client's connection for many concurrent requests: ``await channel.call(msg)``.

    Requests made in one turn of the loop leave together; replies are matched by id,
    in whatever order they come.  When the connection breaks, every open request
    raises the error (``ConnectionBrokenError``) and the channel is ``closed``.
    """

    def __init__(self, comm):
        self.comm = comm
        self.peer = comm.peer
        self.name = comm.name
        self.waiting = {}  # id -> future of its reply
        self.queued = []  # (id, frames) to send at the end of this turn
        self.error = None  # why it broke
        self._ids = itertools.count()
        self._loop = asyncio.get_running_loop()
        comm.on_message(self._take_fast)  # replies taken as they come (else by _read)
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, address, secret=None, timeout=10, limits=None, tls=None):
        """Connect to ``address`` (as :func:`~.comm.connect`) and return a channel."""
        kwargs = {} if limits is None else {"limits": limits}
        return cls(await connect(address, secret, timeout, tls=tls, **kwargs))

    def __repr__(self):
        return f"<Channel to {self.name} open={len(self.waiting)}>"

    @property
    def closed(self):
        return self.error is not None or self.comm.closed

    def close(self):
        """Close the connection; open requests raise ``CommClosedError``."""
        self.comm.close()
        self._broke(CommClosedError(f"channel to {self.name} was closed by us"))

    def request(self, msg):
        """``(id, future)``: ``msg`` queued to be sent, and the future of its raw reply."""
        future = self._loop.create_future()
        if self.error is not None:
            future.set_exception(self.error)
            return None, future
        try:
            entry = pack(msg)
        except SerializationError as e:
            future.set_exception(SerializationError(f"could not serialize a message for "
                                                    f"{self.name}: {e}"))  # fmt: skip
            return None, future
        i = next(self._ids)
        idle = not self.waiting
        self.waiting[i] = future
        if idle:  # nothing to wait for: a lone request leaves at once
            self._send([(i, entry)])
            return i, future
        if not self.queued:  # those of this turn leave together at its end
            self._loop.call_soon(self._flush)
        self.queued.append((i, entry))
        return i, future

    async def call(self, msg, timeout=None):
        """Send ``msg`` and return the ``result`` of its reply, or raise its error (see
        :func:`~.server.result_of`); ``TimeoutError`` after ``timeout`` seconds."""
        i, future = self.request(msg)
        try:
            if timeout is None:
                reply = await future
            else:
                async with asyncio.timeout(timeout):
                    reply = await future
        except BaseException:
            self.waiting.pop(i, None)  # a reply that comes later is dropped
            raise
        if type(reply) is dict and reply.get("status") == "OK":
            return reply.get("result")
        return result_of(reply, self.peer)

    def _flush(self):
        queued, self.queued = self.queued, []
        if self.error is None and queued:
            self._send(queued)

    def _send(self, entries):
        """Send ``entries`` in one message; if the peer would refuse it (more frames than
        it takes), their requests fail saying why, rather than wait for good."""
        try:
            self.comm.send_nowait({"op": "many", "msgs": entries, "reply": False})
        except SerializationError as e:
            for i, _ in entries:
                future = self.waiting.pop(i, None)
                if future is not None and not future.done():
                    future.set_exception(SerializationError(
                        f"could not send a request to {self.name}: {e}"))  # fmt: skip

    def _take(self, replies):
        """Settle the requests that ``replies`` answer; ``False`` if it is not a list of
        them (``_read`` then says so)."""
        if type(replies) is not list:
            return False
        waiting = self.waiting
        for i, frames in replies:
            future = waiting.pop(i, None)
            if future is None or future.done():
                continue
            try:
                future.set_result(unpack(frames, self.name))
            except SerializationError as e:
                future.set_exception(e)
        return True

    def _take_fast(self, replies):
        try:
            return self._take(replies)
        except Exception:  # malformed: _read says so, and ends the channel
            return False

    async def _read(self):
        try:
            while True:
                replies = await self.comm.read()
                if not self._take(replies):
                    raise ProtocolError(f"{self.name} answered a 'many' message with "
                                        f"{type(replies).__name__}, not a list")  # fmt: skip
        except (CommClosedError, ConnectionBrokenError, SerializationError) as e:
            self._broke(e)
        except Exception as e:  # a malformed reply: nothing more on it can be trusted
            self.comm.close()
            self._broke(ProtocolError(f"{self.name} sent a malformed reply: {e!r}"))

    def fail(self, error):
        """Every open request, and every later one, raises ``error``."""
        self._broke(error)

    def _broke(self, error):
        if self.error is None:
            self.error = error
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(self.error)


class Channels:
    """A :class:`Channel` per address, opened on first use and again once it broke.

    >>> channels = Channels(secret="s3cret")
    >>> channels
    <Channels open=0>
    """

    def __init__(self, secret=None, timeout=10, tls=None):
        self.secret = secret
        self.timeout = timeout
        self.tls = tls
        self.open = {}  # address -> Channel
        self.opening = {}  # address -> task opening one
        self.closed = False

    def __repr__(self):
        return f"<Channels open={len(self.open)}>"

    async def call(self, address, msg, timeout=None):
        """``msg`` to ``address`` on its channel: the ``result`` of the reply (see
        :meth:`Channel.call`)."""
        channel = self.open.get(address)
        if channel is None or channel.closed:
            channel = await self.get(address)
        return await channel.call(msg, timeout)

    async def get(self, address):
        """The open channel to ``address``; one connection however many ask at once."""
        if self.closed:
            raise CommClosedError("the channels are closed")
        channel = self.open.get(address)
        if channel is not None and not channel.closed:
            return channel
        opening = self.opening.get(address)
        if opening is None:
            opening = self.opening[address] = asyncio.ensure_future(
                Channel.open(address, self.secret, self.timeout, tls=self.tls))
            opening.add_done_callback(lambda _: self.opening.pop(address, None))
        channel = await asyncio.shield(opening)
        if self.closed:
            channel.close()
            raise CommClosedError("the channels are closed")
        self.open[address] = channel
        return channel

    def drop(self, address, why):
        """Close the channel to ``address``, if open: its open requests raise
        ``ConnectionBrokenError`` saying ``why`` (and a late reply goes nowhere)."""
        channel = self.open.pop(address, None)
        if channel is not None:
            channel.comm.close()
            channel.fail(ConnectionBrokenError(f"{channel.name} {why}"))

    def close(self):
        """Close every channel; their open requests raise ``CommClosedError``."""
        self.closed = True
        for channel in self.open.values():
            channel.close()
        self.open.clear()


class ReplyBox:
    """The replies to one connection's ``many`` requests, sent together.

    The loop calls :meth:`opened` for each request it takes up and :meth:`put` for
    each reply it makes; a task thread calls :meth:`put_from_thread`.  Replies made in
    one turn of the loop leave together at its end.  A thread's reply leaves at once,
    from the thread, when it answers the last open request; while others are open, it
    waits for the loop to send it with whatever else is ready by then.  One lock keeps
    the threads' and the loop's sends in order.
    """

    def __init__(self, comm):
        self.comm = comm
        self.loop = asyncio.get_running_loop()
        self.lock = threading.Lock()
        self.ready = []  # (id, frames) not sent yet
        self.open = 0  # requests taken up and not answered yet
        self.flush_due = False  # a send of `ready` is scheduled on the loop
        self.behind = False  # the loop has the rest of a thread's send to write first

    WAIT = 0.001  # seconds a thread's reply may wait for the replies of other requests

    def opened(self, n):
        """``n`` more requests taken up, to be answered."""
        with self.lock:
            self.open += n

    def entry(self, i, reply):
        """``(i, frames)`` of ``reply``, or of the error that it cannot be serialized."""
        try:
            return i, pack(reply)
        except SerializationError as e:
            if reply.get("status") == "error":  # its exception: sent as its type and text
                return i, pack(unpicklable_error(reply))
            return i, pack(error_message(SerializationError(
                f"could not serialize a reply for {self.comm.name}: {e}"), ""))

    def put(self, entry):
        """On the loop: send ``entry`` now if it answers the last open request, else at
        the end of this turn with what else is ready then."""
        with self.lock:
            self.ready.append(entry)
            self.open -= 1
            now = not self.open
            later = not now and not self.flush_due
            if later:
                self.flush_due = True
        if now:
            self.flush()
        elif later:
            self.loop.call_soon(self.flush)

    def put_from_thread(self, entry, now=False):
        """From a task thread: send ``entry``, with every reply ready, now if it answers
        the last open request (or ``now``: its task ran long enough that waiting for the
        others would idle the core its pool has queued the next task for); else within
        ``WAIT`` seconds, or with the last one."""
        with self.lock:
            self.ready.append(entry)
            self.open -= 1
            if (self.open and not now) or self.behind or self.comm.stream.writing():
                if self.flush_due:
                    return
                self.flush_due = True
                wake = True
            else:
                ready, self.ready = self.ready, []
                rest = self._send(ready)
                if not rest:
                    return
                self.behind, wake = True, False
        if wake:  # the others' replies may be long in coming: these do not wait for them
            self.loop.call_soon_threadsafe(self.loop.call_later, self.WAIT, self.flush)
        else:
            self.loop.call_soon_threadsafe(self._write_rest, rest)

    def flush(self):
        """On the loop: send every reply that is ready."""
        with self.lock:
            if self.behind:  # a thread's send is half out: its rest goes first
                self.loop.call_soon(self.flush)
                return
            self.flush_due = False
            ready, self.ready = self.ready, []
            if ready:
                for buf in self._send(ready):
                    self.comm.write_soon(buf)

    def _send(self, ready):
        """Into the socket what it takes at once; returns the rest (under the lock)."""
        if self.comm.closed:
            return []
        buffers, _ = self.comm.encode(ready)  # entries are bytes and buffers: always pickle
        return self.comm.send_direct(buffers)

    def _write_rest(self, rest):
        with self.lock:
            for buf in rest:
                self.comm.write_soon(buf)
            self.behind = False


class SubComm:
    """What a handler sees as its connection for one request of a ``many`` message: the
    peer, and :meth:`prepare` / :meth:`send_prepared` to answer from a task thread."""

    __slots__ = ("comm", "box", "id")

    def __init__(self, comm, box, i):
        self.comm = comm
        self.box = box
        self.id = i

    @property
    def peer(self):
        return self.comm.peer

    @property
    def closed(self):
        return self.comm.closed

    def close(self):
        self.comm.close()

    def prepare(self, msg):
        """The reply ``msg``, ready to send from a thread; ``None`` if it cannot be
        serialized (the loop then answers)."""
        try:
            return self.id, pack(msg)
        except SerializationError:
            return None

    def send_prepared(self, prepared, loop, now=False):
        self.box.put_from_thread(prepared, now)

    def answer(self, msg):
        """On the loop: send the reply ``msg`` with the others ready in this turn."""
        self.box.put(self.box.entry(self.id, msg))


def serve_many(server, comm, msgs):
    """On ``server``'s loop: take up every request of a ``many`` message from ``comm``,
    each answered through the connection's :class:`ReplyBox` when it is done."""
    box = getattr(comm, "box", None)
    if box is None:
        box = comm.box = ReplyBox(comm)
    peer = comm.name
    if type(msgs) is not list:
        comm.send_nowait(error_message(ProtocolError(
            f"malformed 'many' message from {peer}: expected a list of requests"), ""))
        return
    good = [e for e in msgs if type(e) in (tuple, list) and len(e) == 2]
    if len(good) < len(msgs):
        logger.warning("%s: dropped %d malformed requests of a 'many' message from %s",
                       server, len(msgs) - len(good), peer)  # fmt: skip
    box.opened(len(good))  # all at once: the replies made meanwhile wait for the last
    for i, frames in good:
        try:
            msg = unpack(frames, peer)
        except SerializationError as e:
            box.put(box.entry(i, error_message(e)))
            continue
        if type(msg) is not dict or type(msg.get("op")) is not str:
            err = ProtocolError(f"malformed message from {peer}: expected a dict with an 'op'")
            box.put(box.entry(i, error_message(err, "")))
            continue
        response = server.dispatch(SubComm(comm, box, i), msg)
        if type(response) is dict:
            box.put(box.entry(i, response))
        elif response is not REPLIED:
            asyncio.ensure_future(_answer_later(box, i, response))


async def _answer_later(box, i, awaitable):
    response = await awaitable
    if response is not REPLIED:
        box.put(box.entry(i, response))
