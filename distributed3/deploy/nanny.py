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

from ..worker.monitor import TRIM_THRESHOLD
from .procs import spawn

logger = logging.getLogger(__name__)

__all__ = ["Nanny", "RestartBudget", "Tender", "describe_death", "overgrown_cause", "rss_of",
           "worker_environment"]

TERMINATE = 0.95  # default: past this fraction of its memory limit, a worker is killed

POLL = 0.1  # seconds between looks at the child (and its memory)


THREAD_POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment(ncores=None):
    """What a worker process's environment adds: glibc gives freed memory back to the
    system at once (``MALLOC_TRIM_THRESHOLD_``), else a worker that made and spilled
    many results keeps 60 MB and more it no longer uses, and passes its limit; and the
    numerical libraries' own thread pools (OpenMP, OpenBLAS, MKL) get ``ncores``
    threads, the worker's share of the machine, not one per core each: two workers
    whose every numpy matrix product started a thread per core ran them five times
    slower.  A value the user set is kept.

    >>> env = {**os.environ, **worker_environment(2)}
    >>> env["MALLOC_TRIM_THRESHOLD_"] == os.environ.get("MALLOC_TRIM_THRESHOLD_", "65536")
    True
    >>> env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "2")
    True
    """
    out = {} if "MALLOC_TRIM_THRESHOLD_" in os.environ else {
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
    if ncores:
        out.update((name, str(ncores)) for name in THREAD_POOLS if name not in os.environ)
    return out


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


class RestartBudget:
    """Deaths counted over a sliding ``window`` of seconds: more than ``max_restarts``
    in one and the worker is broken, not unlucky.

    >>> budget = RestartBudget(max_restarts=1)
    >>> budget.died(), budget.died(), len(budget)
    (True, False, 2)
    """

    def __init__(self, max_restarts=5, window=60.0):
        self.max_restarts = max_restarts
        self.window = window
        self.deaths = collections.deque()

    def __len__(self):
        return len(self.deaths)

    def died(self):
        """Count a death now; whether a new worker may still be started."""
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - self.window:
            self.deaths.popleft()
        return len(self.deaths) <= self.max_restarts


def overgrown_cause(rss, terminate):
    """The cause reported for a worker its supervisor killed for its memory.

    >>> overgrown_cause(212e6, 130e6)
    'was stopped by its nanny: it used 212 MB, over its 130 MB'
    """
    return f"was stopped by its nanny: it used {rss / 1e6:.0f} MB, over its {terminate / 1e6:.0f} MB"


class Nanny:
    """Run ``command`` (a worker) and start it again whenever it dies on its own."""

    def __init__(self, command, env=None, max_restarts=5, window=60.0, terminate=None,
                 parent_pid=None, report=None):  # fmt: skip
        self.command = command
        self.env = env
        self.budget = RestartBudget(max_restarts, window)
        self.terminate = terminate  # bytes of resident memory above which it is restarted
        self.parent_pid = parent_pid  # when it ends, so do we (and the child)
        self.report = report  # report(pid, cause) tells the center why a child died
        self.overgrown = None  # resident bytes of a child we stopped for its memory
        self.proc = None
        self.stopping = False
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
            self.deaths_logged += 1
            may_restart = self.budget.died()
            why = describe_death(code, rss)
            if self.overgrown:
                why = overgrown_cause(self.overgrown, self.terminate)
            self._report(why)
            if not may_restart:
                logger.error("Worker process %d %s; it died %d times within %.0f s: giving up",
                             self.proc.pid, why, len(self.budget), self.budget.window)  # fmt: skip
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


class Tender:
    """The nanny of workers that are not its own processes' only child: those a center
    forks for ``Pool()`` (``dcenter --workers``), which the center itself looks after.

    Each turn, :meth:`watch_memory` kills a worker past ``terminate`` resident bytes;
    :meth:`died` is told of each one that ended: it reports why (``report(pid, cause)``)
    and returns the pid of a new worker from ``restart()``, or None once the workers died
    more often than ``budget`` allows (the cluster goes on with fewer).
    """

    def __init__(self, restart, report, budget=None, terminate=None):
        self.restart = restart
        self.report = report
        self.budget = budget or RestartBudget()
        self.terminate = terminate
        self.rss = {}  # pid -> resident bytes at the last look
        self.overgrown = {}  # pid -> resident bytes when we killed it

    def watch_memory(self, pids):
        if not self.terminate:
            return
        for pid in pids:
            rss = rss_of(pid)
            if rss is None:
                continue
            self.rss[pid] = rss
            if rss > self.terminate and pid not in self.overgrown:
                logger.warning("Worker process %d uses %.0f MB, over its %.0f MB: restarting "
                               "it", pid, rss / 1e6, self.terminate / 1e6)  # fmt: skip
                self.overgrown[pid] = rss
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def died(self, pid, code):
        """Worker ``pid`` ended with exit status ``code``: the new worker's pid, or None."""
        rss, overgrown = self.rss.pop(pid, None), self.overgrown.pop(pid, None)
        if code == 0 and not overgrown:
            logger.info("Worker process %d left", pid)
            return None
        why = overgrown_cause(overgrown, self.terminate) if overgrown else describe_death(code, rss)
        try:
            self.report(pid, why)
        except Exception as e:
            logger.warning("Could not report that worker process %d %s: %s", pid, why, e)
        if not self.budget.died():
            logger.error("Worker process %d %s; workers died %d times within %.0f s: not "
                         "starting another", pid, why, len(self.budget), self.budget.window)  # fmt: skip
            return None
        new = self.restart()
        logger.warning("Worker process %d %s; started process %d in its place", pid, why, new)
        return new

