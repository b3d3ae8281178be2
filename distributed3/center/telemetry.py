"""What the center keeps for its dashboard: each worker's last gauges, the task stream
and transfers of the last minutes, each worker's recent log lines and errors, and the
cluster's throughput second by second.

Workers send it once a second with the messages they send anyway (see
:mod:`distributed3.worker.telemetry`); nothing here runs on a task's path.  Records
are numbered as they arrive, so a page asks for those after the last it drew.

>>> store = TelemetryStore()
>>> store.update(("127.0.0.1", 9000), {"time": 10.0, "gauges": {"tasks_done": 3},
...     "tasks": [(9.0, 9.5, "inc", 0, 0)], "transfers": [], "errors": [], "log": []})
>>> [t[4] for t in store.tasks_after(0)], store.gauges[("127.0.0.1", 9000)]["tasks_done"]
(['inc'], 3)
"""
import bisect
import time
from collections import defaultdict, deque

TASKS_KEPT = 20000  # task records, cluster-wide (the newest)
TRANSFERS_KEPT = 5000
LINES_KEPT = 200  # log lines and errors, per worker
HISTORY = 300  # seconds of throughput kept
# upper bounds of the task-duration histogram (seconds), as Prometheus buckets
BUCKETS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, float("inf"))


class TelemetryStore:
    """The dashboard's data on the center; ``update`` with each worker's report."""

    def __init__(self):
        self.gauges = {}  # worker -> its last gauges, with "time" (when it said them)
        self.tasks = deque(maxlen=TASKS_KEPT)  # (n, worker, start, stop, name, thread, failed)
        self.transfers = deque(maxlen=TRANSFERS_KEPT)  # (n, worker, start, stop, bytes, keys)
        self.logs = defaultdict(lambda: deque(maxlen=LINES_KEPT))  # worker -> lines
        self.errors = defaultdict(lambda: deque(maxlen=LINES_KEPT))  # worker -> errors
        self.history = {}  # second -> [tasks done, bytes fetched from peers]
        self.totals = {"tasks": 0, "transfer_bytes": 0, "task_seconds": 0.0}
        # how long a message's tasks took, per message: counts by bucket (cumulative in
        # exposition), their sum and number
        self.duration_counts = [0] * len(BUCKETS)
        self.count = 0  # records numbered so far

    def update(self, worker, report):
        """Take a worker's report (see :meth:`.Telemetry.take`)."""
        gauges = dict(report.get("gauges") or {}, time=report.get("time", time.time()))
        before = self.gauges.get(worker, {})
        self.gauges[worker] = gauges
        done = max(gauges.get("tasks_done", 0) - before.get("tasks_done", 0), 0)
        fetched = max(gauges.get("peer_bytes_in", 0) - before.get("peer_bytes_in", 0), 0)
        if before:  # a first report's counters are since the worker started: not a rate
            second = int(gauges["time"])
            bucket = self.history.setdefault(second, [0, 0])
            bucket[0] += done
            bucket[1] += fetched
            while len(self.history) > HISTORY:
                del self.history[min(self.history)]
        for start, stop, name, thread, failed in report.get("tasks", ()):
            self.count += 1
            self.tasks.append((self.count, worker, start, stop, name, thread, failed))
            self.totals["tasks"] += 1
            self.totals["task_seconds"] += stop - start
            self.duration_counts[bisect.bisect_left(BUCKETS, stop - start)] += 1
        for start, stop, nbytes, nkeys in report.get("transfers", ()):
            self.count += 1
            self.transfers.append((self.count, worker, start, stop, nbytes, nkeys))
            self.totals["transfer_bytes"] += nbytes
        self.logs[worker].extend(report.get("log", ()))
        self.errors[worker].extend(report.get("errors", ()))

    def forget(self, worker):
        """A worker left: its gauges go (its logs stay, for the page of a dead worker)."""
        self.gauges.pop(worker, None)

    def tasks_after(self, n, limit=5000):
        """Task records numbered after ``n``, the newest ``limit``."""
        return [t for t in self.tasks if t[0] > n][-limit:]

    def transfers_after(self, n, limit=2000):
        return [t for t in self.transfers if t[0] > n][-limit:]

    def throughput(self, seconds=HISTORY):
        """``[(second, tasks, bytes)]`` of the last ``seconds``, zeros included."""
        now = int(time.time())
        return [(s, *self.history.get(s, (0, 0))) for s in range(now - seconds, now + 1)]
