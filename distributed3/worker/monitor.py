"""A worker's watch on its own memory, under a limit: spill more, pause, warn.

The spill store (:mod:`.store`) keeps the *results* under ``target`` of the limit; what
else a process holds -- a running task's objects, buffers, memory freed but not given
back -- it cannot see.  Every ``interval`` seconds the monitor looks at the process's
resident memory beyond what it used idle, and against the limit:

* above ``spill`` (0.7): it spills the least recently used results until that much is
  written, or none is left in memory;
* above ``pause`` (0.8): the task threads take no new task (those running go on) and
  it logs a warning naming the figures (the first time; later pauses are counted in
  ``worker_info``); below ``pause`` again, work resumes;
* the nanny, outside, kills the process above ``terminate`` (0.95; see
  :mod:`distributed3.deploy.nanny`).

Memory that Python freed may stay with the C allocator, counted in the resident memory
although nothing uses it: glibc keeps blocks of a size that it lately handed back in
its heaps, and a heap whose top is in use keeps every free page below it.  A worker
that made and dropped a few hundred results of a MB kept 40 MB so, paused with nothing
left to spill, and never took a task again.  So, under a limit, glibc gives freed
memory at the top of a heap back at once (as ``MALLOC_TRIM_THRESHOLD_``, which the
nanny sets, does for a process started with it), and above ``spill`` the monitor has
it give back every free page (``malloc_trim``) before it measures what to spill and
whether to pause -- as often as that takes under 5% of the time.

>>> from distributed3.worker.store import SpillStore
>>> class Runner:
...     paused = False
...     def pause(self, why): self.paused = True
...     def resume(self): self.paused = False
>>> store, runner = SpillStore(target=10**9), Runner()
>>> store["x"] = bytes(10**6)
>>> monitor = MemoryMonitor(10**6, store, runner, "demo", baseline=0)
>>> monitor.check(used=900_000)     # over 0.8 of the limit: spill, and pause
'paused'
>>> store.spilled_keys(), runner.paused
(['x'], True)
>>> monitor.check(used=100_000), runner.paused
('running', False)
>>> store.close()
"""
import ctypes
import logging
import os
import time

from .store import rss

logger = logging.getLogger(__name__)

__all__ = ["MemoryMonitor", "TRIM_THRESHOLD", "give_back_freed", "trim_at_once"]

TRIM_THRESHOLD = 65536  # bytes free at a heap's top past which glibc gives them back
M_TRIM_THRESHOLD = -1  # mallopt's parameter for it


def _libc(name):
    """The C library's function ``name``, or ``None`` where it has none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):
        return None


_malloc_trim, _mallopt = _libc("malloc_trim"), _libc("mallopt")


def give_back_freed():
    """Have the C allocator give every page it holds free back to the system; ``False``
    where it cannot (a C library other than glibc).

    >>> give_back_freed()  # on glibc
    True
    """
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def trim_at_once():
    """From now on, glibc gives memory freed at the top of a heap back at once, and
    serves big blocks from fresh mappings (freed whole), as ``MALLOC_TRIM_THRESHOLD_``
    has it do from the start; unless that variable is set.  ``False`` where it cannot.

    >>> trim_at_once() == ("MALLOC_TRIM_THRESHOLD_" not in os.environ)  # on glibc
    True
    """
    if _mallopt is None or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    return bool(_mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class MemoryMonitor:
    """Spill, pause and resume a worker by its process memory (see the module)."""

    interval = 0.1  # seconds between looks

    def __init__(self, limit, store, runner, name, spill=0.7, pause=0.8, baseline=None):
        self.limit = limit
        self.store = store
        self.runner = runner
        self.name = name  # for the log: the worker's address
        self.spill_at = spill * limit
        self.pause_at = pause * limit
        trim_at_once()
        if baseline is None:  # an idle worker's own, without what the process freed
            give_back_freed()  # (before: trimmed later, it would hide as much in use)
            baseline = rss()
        self.baseline = baseline
        self.paused = False
        self.pauses = 0  # how often it paused, for worker_info
        self._trim_after = 0.0  # time.monotonic() before which no malloc_trim

    def used(self):
        """Resident bytes beyond the idle worker's."""
        return max(0, rss() - self.baseline)

    def check(self, used=None):
        """One look: ``"paused"`` or ``"running"`` after it."""
        if used is None:
            used = self.used()
            if used > self.spill_at and self._give_back():
                used = self.used()  # without what was free but still counted
        if used > self.spill_at and self.store.memory_bytes:
            self.store.spill_bytes(used - self.spill_at)
        if used > self.pause_at and not self.paused:
            self.paused = True
            self.pauses += 1
            why = (f"worker {self.name} uses {used / 1e6:.0f} MB beyond an idle worker, over "
                   f"{100 * self.pause_at / self.limit:.0f}% of its {self.limit / 1e6:.0f} MB "
                   f"limit")  # fmt: skip
            self.runner.pause(f"{why}: paused, it takes no task until that falls")
            log = logger.warning if self.pauses == 1 else logger.info  # then worker_info
            log("%s: no new task starts until it falls (%.0f MB of results in memory, %.0f MB "
                "spilled; queued tasks go to other workers)", why,
                self.store.memory_bytes / 1e6, self.store.disk_bytes / 1e6)  # fmt: skip
        elif used <= self.pause_at and self.paused:
            self.paused = False
            self.runner.resume()
            logger.info("Worker %s uses %.0f MB beyond an idle worker: taking tasks again",
                        self.name, used / 1e6)  # fmt: skip
        return "paused" if self.paused else "running"

    def _give_back(self):
        """Free pages back to the system, unless the last time took longer than 1/20
        of the time since: ``True`` if that was done."""
        now = time.monotonic()
        if now < self._trim_after or not give_back_freed():
            return False
        self._trim_after = now + 20 * (time.monotonic() - now)
        return True
