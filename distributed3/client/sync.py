"""The sync facade: blocking calls on top of coroutines.

Every operation is a coroutine first.  Sync callers -- scripts, IPython,
Jupyter, where a loop may already run in the main thread -- run those
coroutines on one process-wide event loop (``LoopThread``) and block on the
result; ``await``-ing callers on any loop get the same coroutine through
:func:`asyncio.wrap_future`.

Who runs that loop: a blocking call made from a thread with no loop of its own
runs the loop *itself* until its coroutine ends, so a call costs no hand-off
between threads (each one is a wake-up of a sleeping thread: tens of
microseconds, most of a small call's round trip).  Between such calls, and for
callers that cannot run it (a thread already running a loop, as in Jupyter, or
a second thread while the first one runs it), a daemon thread runs it: it takes
the loop over once it has been left alone for ``LINGER`` seconds, or at once
when a caller waits on it.  So background work (replies of tasks submitted
without waiting, membership changes, releases) goes on between calls, at most
``LINGER`` late.

>>> lt = loop_thread()
>>> async def add(x, y):
...     return x + y
>>> lt.run_sync(add(1, 2))
3
"""
import asyncio
import atexit
import logging
import os
import signal
import sys
import threading
import time
import weakref

from .polling import PollingSelector

try:  # the C functions under ``signal``'s: without its enum wrapping, ~5 us less a call
    from _signal import getsignal as _getsignal
    from _signal import signal as _setsignal
except ImportError:  # another Python
    from signal import getsignal as _getsignal
    from signal import signal as _setsignal

_lock = threading.Lock()
_instance = None
_open_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sync session -> pid, to close at exit
logger = logging.getLogger(__name__)


class LoopThread:
    """One asyncio event loop, run by the blocking caller or else by a daemon thread."""

    LINGER = 0.005  # seconds the loop may go unrun after a call before the daemon takes it

    def __init__(self):
        # polls a moment before it sleeps while a caller waits: see polling.py
        self.selector = PollingSelector(wanted=self._caller_waits)
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self.pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._driver = None  # ident of the thread running the loop now
        self._left_at = 0.0  # when a caller last gave the loop up
        self._taken_at = 0.0  # when a caller last took it
        self._wanted = 0  # callers waiting for the daemon to give the loop up
        self._waiting = 0  # callers waiting for somebody else to run their coroutine
        self.thread = threading.Thread(target=self._serve, daemon=True, name="distributed3-loop")
        self.thread.start()

    # -- the daemon ------------------------------------------------------------

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        me = threading.get_ident()
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._driver is None and not self._wanted:
                        idle = time.monotonic() - self._left_at
                        if self._waiting or idle >= self.LINGER:
                            break
                        cond.wait(self.LINGER - idle)
                    else:  # a caller runs it, or is about to: look again in a while,
                        # the longer the more it has been running (an hour-long gather)
                        held = time.monotonic() - self._taken_at
                        cond.wait(min(max(self.LINGER, held / 10), 0.1))
                self._driver = me
            try:
                self.loop.run_forever()  # until a caller asks for the loop (loop.stop)
            finally:
                with cond:
                    self._driver = None
                    cond.notify_all()

    def _caller_waits(self):
        """Whether a blocking call waits on the loop now: a caller's thread runs it,
        or a caller waits for the daemon to run its coroutine."""
        driver = self._driver
        return bool(self._waiting) or (driver is not None and driver != self.thread.ident)

    # -- callers ---------------------------------------------------------------

    def check_caller(self):
        """Raise why this thread may not make a blocking call now: in a fork of the
        process that made the loop, while Python exits, or on the loop itself."""
        if self.pid != os.getpid():
            raise RuntimeError(
                "this distributed3 object was made in another process (before a fork) and "
                "shares its connections: make a new Pool in this process"
            )
        if sys.is_finalizing():  # the daemon thread may hold the loop, and is stopped
            raise RuntimeError("a blocking distributed3 call was made while Python exits")
        if asyncio._get_running_loop() is self.loop:
            raise RuntimeError(
                "a blocking distributed3 call was made from its own event loop; "
                "use the async form (e.g. `await pool.amap(...)`)"
            )

    def unattended(self):
        """Seconds since a caller last ran the loop itself (the daemon runs it after
        ``LINGER``); 0 while a caller runs it."""
        driver = self._driver
        if driver is not None and driver != self.thread.ident:
            return 0.0
        return time.monotonic() - self._left_at

    def run_sync(self, coro, timeout=None):
        """Run ``coro`` on this loop and block until it finishes (or ``timeout``)."""
        try:
            self.check_caller()
        except RuntimeError:
            coro.close()
            raise
        running = asyncio._get_running_loop()
        if running is None:
            me = threading.get_ident()
            try:
                try:
                    taken = self._take()
                except BaseException:  # Ctrl-C while waiting for the loop: never to run
                    coro.close()
                    raise
                if taken:
                    return self._drive(coro, timeout)
            finally:  # whatever interrupted us: the loop is not ours any more
                if self._driver == me:
                    with self._cond:
                        self._driver = None
                        self._left_at = now = time.monotonic()
                        # the daemon sleeps longer the longer a call runs: wake it
                        if self._waiting or now - self._taken_at > self.LINGER:
                            self._cond.notify_all()
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
        try:
            return self._submit(coro, timeout)
        finally:
            with self._cond:
                self._waiting -= 1

    def _take(self):
        """Make this thread the one that runs the loop, unless another caller runs it."""
        cond = self._cond
        with cond:
            self._wanted += 1
            try:
                while self._driver == self.thread.ident:  # the daemon: ask it to stop
                    self.loop.call_soon_threadsafe(self.loop.stop)
                    cond.wait()
            finally:
                self._wanted -= 1
            if self._driver is not None:  # another caller's thread: it runs ours too
                return False
            self._driver = threading.get_ident()
            self._taken_at = time.monotonic()
            return True

    def _drive(self, coro, timeout):
        """Run the loop in this thread until ``coro`` is done."""
        loop = self.loop
        task = loop.create_task(_stop_after(coro, loop, threading.get_ident()))
        ended = []  # why the loop stopped before the task ended: "timeout", "interrupt"

        def expire():
            ended.append("timeout")
            loop.stop()

        timer = None if timeout is None else loop.call_later(timeout, expire)
        # Ctrl-C while this thread runs the loop must not land in the middle of some
        # other task or of tornado's buffers: it cancels this call only (a second one
        # interrupts at once), as asyncio.run does
        sigint = _interrupt_handler(loop, ended)
        try:
            while not task.done() and not ended:
                loop.run_forever()  # returns on loop.stop(), ours or a stray one
        finally:
            if sigint is not None:
                _setsignal(signal.SIGINT, sigint)
            if timer is not None:
                timer.cancel()
            if not task.done():  # the daemon runs what cancelling it takes
                task.cancel()
        if task.done():
            return task.result()
        if ended[0] == "interrupt":
            raise KeyboardInterrupt
        raise TimeoutError(f"the call did not finish within {timeout} s")

    def _submit(self, coro, timeout):
        """Hand ``coro`` to whichever thread runs the loop; wait for it."""
        # lighter than run_coroutine_threadsafe (no concurrent Future, no chained
        # callbacks): one wake-up of the loop, one lock released when the task ends
        done = threading.Lock()
        done.acquire()
        box = []

        def start():
            task = self.loop.create_task(coro)
            box.append(task)
            task.add_done_callback(lambda _: done.release())

        self.loop.call_soon_threadsafe(start)
        try:
            if not done.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"the call did not finish within {timeout} s")
        except BaseException:  # KeyboardInterrupt, timeout: stop the coroutine too
            self.loop.call_soon_threadsafe(lambda: box and box[0].cancel())
            raise
        return box[0].result()


async def _stop_after(coro, loop, driver):
    """``await coro``, then stop ``loop`` in the same step (no extra loop iteration) if
    the ``driver`` thread still runs it."""
    try:
        return await coro
    finally:
        if threading.get_ident() == driver:
            loop.stop()


def _interrupt_handler(loop, ended):
    """While this thread runs ``loop``: SIGINT stops it with ``ended`` saying so.

    Returns the handler to put back, or ``None`` where nothing was changed (not the
    main thread, or a handler of the user's own is in place).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = _getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return None

    def on_sigint(signum, frame):
        if "interrupt" in ended:  # the second Ctrl-C: wherever it lands
            raise KeyboardInterrupt
        ended.append("interrupt")
        loop.call_soon_threadsafe(loop.stop)  # wakes the selector too

    _setsignal(signal.SIGINT, on_sigint)
    return previous


def loop_thread():
    """The process-wide :class:`LoopThread`, started on first use (and again after fork)."""
    global _instance
    with _lock:
        if _instance is None or _instance.pid != os.getpid():
            _instance = LoopThread()
        return _instance


async def run_in_loop(coro, loop):
    """Await ``coro`` on ``loop`` from a coroutine running on any loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def close_at_exit(session):
    """Close the sync ``session`` when the interpreter exits, if it still runs then: a
    script that never calls ``close()`` releases its keys and stops its local cluster as
    ``close()`` would, and its workers leave quietly instead of warning that their
    center vanished.  Registered anew each time, so it runs before the exit handlers
    registered meanwhile (such as the local cluster's ``weakref.finalize``)."""
    _open_sessions[session] = os.getpid()
    atexit.unregister(_close_open_sessions)
    atexit.register(_close_open_sessions)


def _close_open_sessions():
    for session, pid in list(_open_sessions.items()):
        if session.status == "running" and pid == os.getpid():  # not a fork's
            try:
                session.sync(session.close(), timeout=10)
            except BaseException as e:  # exiting anyway: what is left is killed
                logger.debug("Could not close %r at exit: %r", session, e)
