"""What a worker tells its center for the dashboard: the tasks it ran (when, on which
thread, which function), the inputs it fetched, its recent log lines and errors, and its
gauges (tasks, memory, CPU, keys).

Only a center that serves a dashboard asks for it (its answer to ``register``).  Task
threads append a record per message they run (a chunk is one record) to a bounded deque;
the worker's center loop (:mod:`.center_link`) takes what accumulated and sends it with
the message it sends anyway, at most once a second: nothing is sent per task.

>>> t = Telemetry()
>>> t.task(100.0, 100.5, "sleep-ab12cd-3", 1, 0)
>>> report = t.take({"ncores": 1})
>>> report["tasks"][0][2:], report["gauges"]["ncores"]
(('sleep', 0, 0), 1)
"""
import logging
import threading
import time
from collections import deque

EVERY = 1.0  # seconds between two reports
TASKS_KEPT = 2000  # task records between two reports (the newest)
TRANSFERS_KEPT = 500
ERRORS_KEPT = 50
LOG_KEPT = 200


def task_name(keys):
    """The function's name in a task's keys (``name-<client>-<n>``): what the task stream
    colours by.

    >>> task_name(["inc-1a2b3c4d-7"]), task_name("sum-1a2b3c4d-0"), task_name(["x"])
    ('inc', 'sum', 'x')
    """
    key = keys if isinstance(keys, str) else (keys[0] if keys else "?")
    parts = str(key).rsplit("-", 2)
    return parts[0] if len(parts) == 3 else str(key)


class LogTail(logging.Handler):
    """The last lines distributed3 logged in this process (INFO and up)."""

    def __init__(self, kept=LOG_KEPT):
        super().__init__(logging.INFO)
        self.lines = deque(maxlen=kept)
        self.count = 0  # lines ever logged: a reader knows which it has not seen

    def emit(self, record):
        try:
            self.lines.append((record.created, record.levelname, record.getMessage()))
            self.count += 1
        except Exception:
            self.handleError(record)

    def since(self, seen):
        """``(lines logged after the first ``seen``, count now)``."""
        count = self.count
        new = min(count - seen, len(self.lines))
        return list(self.lines)[len(self.lines) - new:], count


_tail = None
_tail_lock = threading.Lock()


def log_tail():
    """This process's :class:`LogTail`, attached to the ``distributed3`` logger once."""
    global _tail
    with _tail_lock:
        if _tail is None:
            _tail = LogTail()
            # what the process's log level lets through (dworker --log-level)
            logging.getLogger("distributed3").addHandler(_tail)
        return _tail


class Telemetry:
    """A worker's records for the dashboard, between two reports."""

    def __init__(self):
        self.tasks = deque(maxlen=TASKS_KEPT)  # (start, stop, keys, thread ident, failed)
        self.transfers = deque(maxlen=TRANSFERS_KEPT)  # (start, stop, nbytes, nkeys)
        self.errors = deque(maxlen=ERRORS_KEPT)  # (time, task name, error text)
        self.tail = log_tail()
        self._log_seen = self.tail.count
        self._sent = 0.0  # monotonic time of the last report
        self._cpu = (time.monotonic(), time.process_time())
        self._threads = {}  # thread ident -> its number here, from 0

    def task(self, start, stop, keys, n, failed, error=None):
        """A message's tasks ran from ``start`` to ``stop`` (wall-clock seconds) on this
        thread; ``failed`` of the ``n`` failed (``error``: the first one's text).  On the
        task thread: the least work here, names are found when the report is taken."""
        self.tasks.append((start, stop, keys, threading.get_ident(), failed))
        if error is not None:
            self.errors.append((stop, task_name(keys), error))

    def _named(self, records):
        """Task records with the function's name and the thread's number here."""
        threads = self._threads
        return [(start, stop, task_name(keys),
                 threads.setdefault(ident, len(threads)), failed)
                for start, stop, keys, ident, failed in records]  # fmt: skip

    def transfer(self, start, stop, nbytes, nkeys):
        """Inputs fetched from peers: ``nbytes`` in ``nkeys`` keys, in that time."""
        self.transfers.append((start, stop, nbytes, nkeys))

    def due(self):
        return time.monotonic() - self._sent >= EVERY

    def take(self, gauges):
        """Everything recorded since the last report, with ``gauges`` and the process's
        CPU use since then (per cent of one core)."""
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu
        self._cpu, self._sent = (now, cpu), now
        log, self._log_seen = self.tail.since(self._log_seen)
        report = {
            "time": time.time(),
            "gauges": dict(gauges, cpu=100 * (cpu - cpu_then) / max(now - then, 1e-6)),
            "tasks": self._named(_drain(self.tasks)),
            "transfers": _drain(self.transfers),
            "errors": _drain(self.errors),
            "log": log,
        }
        return report


def _drain(records):
    out = []
    while records:
        try:
            out.append(records.popleft())
        except IndexError:  # another thread took the last one
            break
    return out
