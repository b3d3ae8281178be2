"""Resident memory of the benchmark's processes: once, or its peak over a run.

>>> with PeakRSS([os.getpid()]) as peak:
...     block = b"x" * 50_000_000
>>> peak.workers_mb > 40 and peak.parent_mb > 40
True
"""
import os
import threading

__all__ = ["PeakRSS", "descendants", "rss_mb"]

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid):
    """Resident memory of process ``pid`` in MB (0 if it is gone).

    >>> rss_mb(os.getpid()) > 1
    True
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(pid):
    """Every process below ``pid``.

    >>> import subprocess, sys
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    >>> child.pid in descendants(os.getpid())
    True
    >>> child.kill(); child.wait()
    -9
    """
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


class PeakRSS:
    """The peak, while the ``with`` block runs, of the summed RSS of the processes
    ``pids`` (``workers_mb``) and of this process (``parent_mb``), sampled from a
    thread every ``interval`` seconds, and once more on the way in and out.

    ``pids`` may be a callable returning the pids, asked at each sample, for systems
    whose workers come and go.

    >>> with PeakRSS(lambda: []) as peak:
    ...     pass
    >>> peak.workers_mb, peak.parent_mb > 1
    (0.0, True)
    """

    def __init__(self, pids, interval=0.02):
        self.pids = pids if callable(pids) else (lambda: pids)
        self.interval = interval
        self.workers_mb = self.parent_mb = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="peak-rss", daemon=True)

    def sample(self):
        """Take one sample into the peaks."""
        self.workers_mb = max(self.workers_mb, sum(rss_mb(p) for p in self.pids()))
        self.parent_mb = max(self.parent_mb, rss_mb(os.getpid()))

    def watch(self):
        """Sample until told to stop (the thread's loop)."""
        while not self.stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sample()
