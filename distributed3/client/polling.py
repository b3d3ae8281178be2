"""The blocking client's selector: it polls for a moment before the loop sleeps.

A blocking call (``pool.apply(f, x).get()``, ``pool.gather(...)``) waits on the
loop for replies.  When the loop finds nothing to read it sleeps in the kernel,
and waking it again costs more than the reply's trip: on a virtual machine the
idle CPU halts, the wake-up goes through the hypervisor, and the first tens of
microseconds of Python after it run on cold caches.  On the 2-core VMs this
project is measured on, that was a third of an ``apply(...).get()`` (370 us
against 270 us with polling, the raw ping-pong 120-140 us).

So while a caller waits on the loop (:meth:`PollingSelector.wanted`), an empty
``select`` asks again without sleeping, for up to ``POLL`` seconds, before it
sleeps as usual.  Only when it pays: once a wait has been longer than ``POLL``
(a task that takes time, a quiet cluster) the next one sleeps at once, and
polling resumes after the next wait short enough to have been caught.  The cost
is bounded: at most ``POLL`` of CPU per wait that polling did not catch, and
none while nobody waits (the loop's daemon thread between calls) or while the
replies are slow.

>>> import socket
>>> selector = PollingSelector(wanted=lambda: True)
>>> a, b = socket.socketpair()
>>> _ = selector.register(a, selectors.EVENT_READ)
>>> _ = b.send(b"x")
>>> [key.fileobj is a for key, _ in selector.select()], selector.polls
([True], 1)
>>> selector.close(); a.close(); b.close()
"""
import selectors
import time

__all__ = ["PollingSelector"]


class PollingSelector(selectors.DefaultSelector):
    """A :class:`selectors.DefaultSelector` that polls for up to ``POLL`` seconds
    before it sleeps, while ``wanted()`` says a caller waits and the last wait (for
    something to read, or for a timer) was shorter than ``POLL``.  ``polls`` counts
    the polls that found nothing ready yet and the one that found it (none when it
    slept at once)."""

    POLL = 0.0003  # s: longer than an apply's round trip here (150-250 us), short
    # enough that a wait it does not catch costs little

    def __init__(self, wanted=lambda: False):
        super().__init__()
        self.wanted = wanted
        self.last_wait = 0.0  # s the last wait took, for something to read or a timer
        self.polls = 0

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0:
            return super().select(0)
        start = time.perf_counter()
        if self.last_wait < self.POLL and self.wanted():
            window = self.POLL if timeout is None else min(self.POLL, timeout)
            while True:
                self.polls += 1
                ready = super().select(0)
                now = time.perf_counter()
                if ready:
                    self.last_wait = now - start
                    return ready
                if now - start >= window:
                    break
            if timeout is not None:  # what is left of it, if a timer is not due yet
                timeout = max(0.0, timeout - (now - start))
        ready = super().select(timeout)
        self.last_wait = time.perf_counter() - start
        return ready
