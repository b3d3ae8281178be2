"""Who gets in: file descriptors, accepting without spinning, caps per peer host.

A server holds one file descriptor per connection.  Three rules keep a flood of
connections -- silent sockets that never finish the handshake, from one host or many --
from starving the peers that do authenticate:

* :func:`raise_open_files_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard one at
  start (1,024 is a common default, and a center holds a socket per worker and client);
* :class:`Admission` caps the connections still in their handshake per host, and at the
  cap closes that host's *oldest* one rather than refusing the newcomer: a client whose
  handshake takes a millisecond always gets in; authenticated connections have their
  own cap per host, kept below half of what the process may open;
* :func:`accept_handler` accepts like tornado's, but out of descriptors (``EMFILE``) it
  drops the oldest handshaking connections, stops accepting for a moment and logs once,
  instead of failing on every turn of the loop.

>>> admission = Admission(max_open=2, max_handshaking=1)
>>> a, b = object(), object()
>>> admission.admit("h", a), admission.admit("h", b)     # b evicts a, the oldest
(True, True)
>>> admission.evicted == {a}
True
"""
import errno
import logging
import resource
import time
from collections import Counter, OrderedDict

from tornado.ioloop import IOLoop

logger = logging.getLogger(__name__)

__all__ = ["Admission", "accept_handler", "open_files_limit", "raise_open_files_limit"]

EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
MAX_HANDSHAKING = 64  # connections per host still proving the secret
PAUSE = (0.05, 1.0)  # seconds without accepting when out of descriptors: first, most


def open_files_limit():
    """The soft limit on this process's open file descriptors.

    >>> open_files_limit() > 0
    True
    """
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_open_files_limit():
    """Lift the soft limit on open file descriptors to the hard one; returns the limit.

    >>> raise_open_files_limit() == open_files_limit()
    True
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            logger.debug("could not raise the open files limit to %s: %s", want, e)
    logger.debug("open files limit: %s", soft)
    return soft


class Admission:
    """Connections per peer host: at most ``max_handshaking`` still in their handshake
    (a newcomer evicts the oldest) and ``max_open`` authenticated ones (a newcomer is
    refused).  The server closes what ``evicted`` holds."""

    def __init__(self, max_open, max_handshaking=MAX_HANDSHAKING):
        self.max_open = max_open
        self.max_handshaking = max_handshaking
        self.handshaking = {}  # host -> OrderedDict(stream -> None), oldest first
        self.open = Counter()  # host -> authenticated connections
        self.evicted = set()  # streams closed to make room: not worth a warning each
        self._warned = {}  # host -> when we last warned about it

    @classmethod
    def for_this_process(cls, max_open, max_handshaking=MAX_HANDSHAKING):
        """Caps that fit the descriptors this process may hold: half for one host."""
        half = max(8, open_files_limit() // 2)
        return cls(min(max_open, half), min(max_handshaking, half))

    def admit(self, host, stream):
        """Whether ``stream`` from ``host`` may start its handshake (it may evict the
        host's oldest handshaking stream, added to ``evicted``)."""
        if self.open[host] >= self.max_open:
            self.warn(host, f"it already has {self.open[host]} authenticated connections")
            return False
        waiting = self.handshaking.setdefault(host, OrderedDict())
        if len(waiting) >= self.max_handshaking:
            oldest, _ = waiting.popitem(last=False)
            self.evicted.add(oldest)
            self.warn(host, f"{self.max_handshaking} connections of it were still in their "
                            "handshake; the oldest ones are closed to let new ones in")
        waiting[stream] = None
        return True

    def authenticated(self, host, stream):
        """``stream`` proved the secret: it counts against ``max_open`` now."""
        self._forget(host, stream)
        self.open[host] += 1

    def left(self, host, stream, was_open):
        """``stream`` ended, authenticated (``was_open``) or not."""
        self._forget(host, stream)
        self.evicted.discard(stream)
        if was_open:
            self.open[host] -= 1
            if not self.open[host]:
                del self.open[host]

    def evict_oldest(self, fraction=0.5):
        """The oldest handshaking streams of every host, ``fraction`` of them: to close
        when the process is out of descriptors."""
        out = []
        for waiting in self.handshaking.values():
            for _ in range(max(1, int(len(waiting) * fraction)) if waiting else 0):
                stream, _ = waiting.popitem(last=False)
                self.evicted.add(stream)
                out.append(stream)
        return out

    def warn(self, host, why, every=10.0):
        """Log ``why`` for ``host`` at most once every ``every`` seconds."""
        now = time.monotonic()
        if now - self._warned.get(host, -every) >= every:
            self._warned[host] = now
            logger.warning("Connections from %s: %s", host, why)

    def _forget(self, host, stream):
        waiting = self.handshaking.get(host)
        if waiting is not None:
            waiting.pop(stream, None)
            if not waiting:
                del self.handshaking[host]


def accept_handler(sock, callback, on_exhausted, name=""):
    """Accept connections on ``sock`` as tornado's ``add_accept_handler`` does; when the
    process runs out of descriptors, call ``on_exhausted()`` (to free some), stop
    accepting for a moment (longer each time in a row) and log once until all waiting
    connections were taken again.  Returns the function that stops accepting."""
    io_loop = IOLoop.current()
    state = {"removed": False, "timer": None, "pause": PAUSE[0], "warned": False}

    def handler(fd, events):
        for _ in range(128):
            if state["removed"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:  # took every waiting connection: recovered
                state["pause"], state["warned"] = PAUSE[0], False
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno not in EXHAUSTED:
                    raise
                pause(e)
                return
            callback(connection, address)

    def pause(error):
        io_loop.remove_handler(sock)
        on_exhausted()
        if not state["warned"]:
            state["warned"] = True
            logger.warning("%s is out of file descriptors (%s; limit %d): not accepting "
                           "connections for a moment", name, error.strerror,
                           open_files_limit())  # fmt: skip
        state["timer"] = io_loop.call_later(state["pause"], resume)
        state["pause"] = min(state["pause"] * 2, PAUSE[1])

    def resume():
        state["timer"] = None
        if not state["removed"]:
            io_loop.add_handler(sock, handler, IOLoop.READ)

    def remove():
        state["removed"] = True
        if state["timer"] is not None:
            io_loop.remove_timeout(state["timer"])
        else:
            io_loop.remove_handler(sock)

    io_loop.add_handler(sock, handler, IOLoop.READ)
    return remove
