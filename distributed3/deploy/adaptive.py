"""Adaptive scaling: as many workers as the waiting work needs, between two bounds.

Every ``interval`` seconds a thread asks the center for the pools' backlog (the tasks
each pool has not seen finish, which pools report while it changes: see
:mod:`distributed3.client.backlog`) and sets the cluster's size to :func:`target`.
Growing happens at once; shrinking only once the target has stayed lower for ``grace``
seconds, and then through the workers' retirement, which loses nothing.

>>> target(backlog=0, worker_cores=4, minimum=1, maximum=10)
1
>>> target(backlog=9, worker_cores=4, minimum=0, maximum=10)
3
>>> target(backlog=1000, worker_cores=4, minimum=0, maximum=10)
10
"""
import logging
import math
import threading
import time

logger = logging.getLogger(__name__)


def target(backlog, worker_cores, minimum, maximum):
    """Workers for ``backlog`` unfinished tasks: one core each, within the bounds."""
    want = math.ceil(backlog / max(worker_cores, 1))
    return max(minimum, min(want, maximum if maximum is not None else want))


class Adaptive:
    """Keeps ``cluster`` (a :class:`~.cluster.Cluster` or the local one) sized to its
    work; ``stop()``."""

    def __init__(self, cluster, minimum=0, maximum=None, interval=1.0, grace=10.0):
        if maximum is not None and maximum < minimum:
            raise ValueError(f"adapt: maximum {maximum} is below minimum {minimum}")
        self.cluster = cluster
        self.minimum, self.maximum = minimum, maximum
        self.interval, self.grace = interval, grace
        self.log = []  # (time, workers before, workers asked for): what it decided
        self._lower_since = None  # since when the target has been below the size
        self._stopped = threading.Event()
        # the thread that scales: its calls to ``scale`` are adapting, not a user's
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"distributed3-adapt-{cluster.id}")  # fmt: skip
        self.thread.start()

    def __repr__(self):
        return f"<Adaptive minimum={self.minimum} maximum={self.maximum}>"

    def stop(self):
        """Stop adapting (from any thread but its own); the workers stay."""
        self._stopped.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(self.cluster.timeout)

    def _run(self):
        while not self._stopped.is_set():
            try:
                self.step()
            except Exception as e:  # the center away a moment, an engine's hiccup
                logger.warning("Adaptive scaling of %s: %s", self.cluster, e)
            self._stopped.wait(self.interval)

    def step(self, now=None):
        """One look at the backlog, and the scaling it calls for; returns the size."""
        now = time.monotonic() if now is None else now
        cluster = self.cluster
        backlog = sum(cluster.call_center("backlog").values())
        want = target(backlog, cluster.worker_cores, self.minimum, self.maximum)
        have = cluster.size()
        if want >= have:
            self._lower_since = None
        elif self._lower_since is None:
            self._lower_since = now
        if want > have or (want < have and now - self._lower_since >= self.grace):
            logger.info("Adaptive: %d tasks unfinished; %d -> %d workers", backlog, have, want)
            self.log.append((time.time(), have, want))
            cluster.scale(want)
            self._lower_since = None
            return want
        return have  # size() forgot the workers that ended: none is started again idle
