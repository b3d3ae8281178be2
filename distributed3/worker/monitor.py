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
import logging

from .store import rss

logger = logging.getLogger(__name__)

__all__ = ["MemoryMonitor"]


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
        self.baseline = rss() if baseline is None else baseline  # an idle worker's own
        self.paused = False
        self.pauses = 0  # how often it paused, for worker_info

    def used(self):
        """Resident bytes beyond the idle worker's."""
        return max(0, rss() - self.baseline)

    def check(self, used=None):
        """One look: ``"paused"`` or ``"running"`` after it."""
        used = self.used() if used is None else used
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
