"""Reading the wire format: bytes in, whole messages out, sizes checked first.

A message is ``nframes:u64  length:u64 * nframes  frame bytes...`` (see comm.py).
A :class:`Framer` is fed what a connection receives, the way asyncio's
``BufferedProtocol`` is: :meth:`~Framer.get_buffer` says where the next bytes go,
:meth:`~Framer.buffer_updated` how many came.  Each message it completes goes to
``ready`` as ``(frames, nbytes)``, its frames memoryviews over one buffer of its own.

* The head is checked against :class:`~.comm.Limits` before anything is allocated:
  too many frames, too big a frame or message is a ``ProtocolError`` naming the peer.
* A small message is copied out of the read buffer, which then takes the next ones:
  many small messages come in one ``recv``.
* A big one's payload goes straight into place: the buffer allocated for it (left
  uninitialised, see :func:`allocate`) is handed out as the next ``get_buffer``, so
  its bytes are never copied, and arrays built over it are writable.

>>> import struct
>>> framer = Framer(Limits(), "127.0.0.1:8786")
>>> wire = struct.pack("<QQQ", 2, 3, 2) + b"abcde"
>>> framer.get_buffer()[:len(wire)] = wire
>>> framer.buffer_updated(len(wire))
>>> frames, nbytes = framer.ready.popleft()
>>> [bytes(f) for f in frames], nbytes
([b'abc', b'de'], 5)
"""
import struct
from collections import deque
from dataclasses import dataclass

from ..exceptions import ProtocolError

__all__ = ["DEFAULT_LIMITS", "Framer", "Limits", "allocate"]

_U64 = struct.Struct("<Q")
CHUNK = 1 << 16  # the read buffer: what one recv takes of small messages
_IN_PLACE = 1 << 15  # a payload this big that is not all here yet is read into place
_LAZY_ALLOCATION = 1 << 20


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


def allocate(nbytes):
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


class Framer:
    """The messages in the bytes one connection receives from ``peer`` (its name, for
    errors), within ``limits``; see the module's docstring."""

    def __init__(self, limits, peer):
        self.limits = limits
        self.peer = peer
        self.ready = deque()  # (frames, nbytes) of each whole message, in order
        self._buf = bytearray(CHUNK)
        self._start = self._end = 0  # the bytes received and not framed yet
        self._into = None  # while a big payload comes: [its buffer, lengths, bytes in]

    def get_buffer(self):
        """Where the next bytes go: a memoryview to fill (from its start)."""
        into = self._into
        if into is not None:
            return memoryview(into[0])[into[2]:]
        if self._end == len(self._buf):  # full: what is left of a message to the front
            self._compact()
        return memoryview(self._buf)[self._end:]

    def feed(self, data):
        """Take ``data``, bytes received elsewhere (before framing began), as if read
        into :meth:`get_buffer` a buffer at a time."""
        data = memoryview(data)
        while data:
            into = self.get_buffer()
            n = min(len(into), len(data))
            into[:n] = data[:n]
            del into  # no export of the buffer left when it is moved or grown
            self.buffer_updated(n)
            data = data[n:]

    def filling(self):
        """Whether a big payload is coming in, straight into its buffer."""
        return self._into is not None

    def buffer_updated(self, n):
        """``n`` bytes came into the last :meth:`get_buffer`; raises ``ProtocolError``
        for a message over the limits (nothing more on the connection can be read)."""
        into = self._into
        if into is not None:
            into[2] += n
            if into[2] == len(into[0]):
                self._into = None
                self._done(into[0], into[1])
            return
        self._end += n
        self._frame()

    def _frame(self):
        buf, end = self._buf, self._end
        start = self._start
        while end - start >= 8:
            (n,) = _U64.unpack_from(buf, start)
            head = 8 + 8 * n
            if not 0 < n <= self.limits.max_frames:
                raise ProtocolError(f"{self.peer} announced {n} frames "
                                    f"(limit {self.limits.max_frames})")  # fmt: skip
            if end - start < head:
                self._start = start
                self._make_room(head)
                return
            lengths = struct.unpack_from(f"<{n}Q", buf, start + 8)
            total = self._check(lengths)
            have = min(end - start - head, total)
            begin = start + head
            if have < total and total >= _IN_PLACE:  # the rest straight into place
                payload = self._allocate(total)
                with memoryview(buf) as view:  # released before buf is written again
                    payload[:have] = view[begin:begin + have]
                self._start = self._end = 0
                self._into = [payload, lengths, have]
                return
            if have < total:
                self._start = start
                self._make_room(head + total)
                return
            with memoryview(buf) as view:
                payload = bytearray(view[begin:begin + total])
            start = begin + total
            self._done(payload, lengths)
        if start == end:
            self._start = self._end = 0
        else:
            self._start = start

    def _check(self, lengths):
        """The payload's size, once its frames are within the limits."""
        limits = self.limits
        total = sum(lengths)
        big = max(lengths)
        if big > limits.max_frame_bytes:
            raise ProtocolError(
                f"{self.peer} announced a frame of {big} bytes (limit {limits.max_frame_bytes})")
        if total > limits.max_message_bytes:
            raise ProtocolError(f"{self.peer} announced a message of {total} bytes "
                                f"(limit {limits.max_message_bytes})")  # fmt: skip
        return total

    def _allocate(self, total):
        try:
            return allocate(total)
        except MemoryError:
            raise ProtocolError(f"{self.peer} announced a message of {total} bytes, more "
                                "than this process can allocate") from None

    def _done(self, payload, lengths):
        view = memoryview(payload)
        frames, at = [], 0
        for length in lengths:
            frames.append(view[at:at + length])
            at += length
        self.ready.append((frames, at))

    def _make_room(self, need):
        """The message begun at ``_start`` (set: compacting moves it to the front) needs
        ``need`` bytes in the buffer."""
        if need > len(self._buf) - self._start:
            self._compact()
            if need > len(self._buf):  # a head of many frames: a bigger buffer
                self._buf.extend(bytes(need - len(self._buf)))

    def _compact(self):
        start, end, buf = self._start, self._end, self._buf
        if start:
            buf[:end - start] = buf[start:end]
            self._start, self._end = 0, end - start
