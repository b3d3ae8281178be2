"""A worker's supervisor: it restarts the worker process when it dies.

``dworker`` runs as a nanny by default: this process starts the real worker as a child
and waits on it.  When the child dies on its own -- killed by a signal (``kill -9``, the
kernel's out-of-memory killer), crashed; not when it exits with status 0, as a worker
that retires does -- the nanny logs why (the signal or exit code, and the child's last
resident size), tells the center through ``report`` (the center logs it, and the pools
name it in their errors), and starts a new worker, which registers with the center
again; the pools treat the tasks that ran there as on any lost worker.  More than
``max_restarts`` deaths within ``window`` seconds and it gives up (exit status 1): a
worker that dies at once every time is broken, not unlucky.  Above ``terminate`` bytes
of resident memory the nanny kills the child itself, before the kernel does (SIGKILL: a
worker over its memory must not take its time to retire), and starts a new one.
SIGTERM or SIGINT to the nanny stop the child and then the nanny.

>>> import sys
>>> nanny = Nanny([sys.executable, "-c", "import sys; sys.exit(3)"], max_restarts=1)
>>> nanny.run(), nanny.deaths_logged
(1, 2)
"""
import collections
import logging
import os
import signal
import subprocess
import time

from .procs import spawn

logger = logging.getLogger(__name__)

__all__ = ["Nanny", "describe_death", "rss_of"]

POLL = 0.1  # seconds between looks at the child (and its memory)


def describe_death(code, rss_bytes=None):
    """Why a child ended, in words, from its ``Popen.returncode``.

    >>> describe_death(-9, 512_000_000)
    'was killed by SIGKILL (out of memory? it last used 512 MB)'
    >>> describe_death(3)
    'exited with code 3'
    """
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = f"was killed by {name}"
        if -code == signal.SIGKILL and rss_bytes:
            why += f" (out of memory? it last used {rss_bytes / 1e6:.0f} MB)"
        return why
    return f"exited with code {code}"


def rss_of(pid):
    """Resident bytes of process ``pid``, or ``None`` once it is gone.

    >>> rss_of(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Nanny:
    """Run ``command`` (a worker) and start it again whenever it dies on its own."""

    def __init__(self, command, env=None, max_restarts=5, window=60.0, terminate=None,
                 parent_pid=None, report=None):  # fmt: skip
        self.command = command
        self.env = env
        self.max_restarts = max_restarts
        self.window = window
        self.terminate = terminate  # bytes of resident memory above which it is restarted
        self.parent_pid = parent_pid  # when it ends, so do we (and the child)
        self.report = report  # report(pid, cause) tells the center why a child died
        self.overgrown = None  # resident bytes of a child we stopped for its memory
        self.proc = None
        self.stopping = False
        self.deaths = collections.deque()
        self.deaths_logged = 0

    def run(self):
        """Supervise until told to stop (returns the child's exit status) or until the
        child died too often (returns 1)."""
        saved = self._install_signals()
        try:
            return self._supervise()
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)

    def _supervise(self):
        while True:
            self.proc = spawn(self.command, env=self.env)
            code, rss = self._wait()
            if self.stopping or (code == 0 and not self.overgrown):  # it retired, or we stop
                return abs(code or 0)
            now = time.monotonic()
            self.deaths.append(now)
            while self.deaths and self.deaths[0] < now - self.window:
                self.deaths.popleft()
            self.deaths_logged += 1
            why = describe_death(code, rss)
            if self.overgrown:
                why = (f"was stopped by its nanny: it used {self.overgrown / 1e6:.0f} MB, "
                       f"over its {self.terminate / 1e6:.0f} MB")
            self._report(why)
            if len(self.deaths) > self.max_restarts:
                logger.error("Worker process %d %s; it died %d times within %.0f s: giving up",
                             self.proc.pid, why, len(self.deaths), self.window)  # fmt: skip
                return 1
            logger.warning("Worker process %d %s; starting a new one", self.proc.pid, why)

    def _report(self, why):
        if self.report is not None:
            try:
                self.report(self.proc.pid, why)
            except Exception as e:  # the center may be gone too: the log says it all
                logger.warning("Could not tell the center that worker process %d %s: %s",
                               self.proc.pid, why, e)  # fmt: skip

    def _wait(self):
        """``(exit code, last resident bytes)`` of the child, once it ends; stops it
        first if it grows over ``terminate``."""
        rss = None
        self.overgrown = None
        while True:
            try:
                return self.proc.wait(POLL), rss
            except subprocess.TimeoutExpired:
                pass
            if self.parent_pid is not None and not _alive(self.parent_pid):
                logger.warning("Parent process %d is gone; stopping the worker", self.parent_pid)
                self.stopping = True
                self._stop_child()
            rss = rss_of(self.proc.pid) or rss
            if self.terminate and rss and rss > self.terminate and not self.stopping:
                logger.warning("Worker process %d uses %.0f MB, over its %.0f MB: restarting "
                               "it", self.proc.pid, rss / 1e6, self.terminate / 1e6)
                self.overgrown = rss
                # killed, not asked to retire: a graceful exit would keep growing, and
                # the pools must count a death against the task that caused it
                self._stop_child(signal.SIGKILL)

    def _stop_child(self, sig=signal.SIGTERM, grace=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _install_signals(self):
        def forward(signum, frame):
            self.stopping = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signum)

        return {signum: signal.signal(signum, forward)
                for signum in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
