"""One task message: the unit a :class:`~distributed3.client.dispatch.Batch` sends to a
worker and settles from its reply.  :mod:`~distributed3.client.tasks`,
:mod:`~distributed3.client.graph` and :mod:`~distributed3.client.recovery` make them.

>>> task = Task(["results"], {"op": "compute", "key": "x"}, {}, 0)
>>> task.deaths, task.missing_bytes(("127.0.0.1", 1))
(0, 0)
"""
from .handles import total_bytes

__all__ = ["Task"]


class Task:
    """One message's worth of work: its ``results`` (:class:`~.results.Handles`, or a
    chunk's :class:`~.results.ResultGroup`: the same interface), its compute message,
    its input handles, and the index of its first element."""

    __slots__ = ("results", "msg", "inputs", "index", "deaths", "fallback")

    def __init__(self, results, msg, inputs, index):
        self.results = results
        self.msg = msg
        self.inputs = inputs
        self.index = index
        self.deaths = 0
        self.fallback = None  # makes it name its inputs one by one, should they be lost

    @property
    def key(self):
        """The key of its first result (or of its chunk's results), to name it by."""
        return self.results.key

    def spread_inputs(self):
        """Name its inputs one by one (its ``fallback``), if it has not yet."""
        if self.fallback is not None:
            self.fallback()
            self.fallback = None
            self.refresh_hints()

    def refresh_hints(self):
        """Point the message's ``who_has`` hints at where the inputs are now."""
        if self.inputs:
            self.msg["who_has"] = {k: list(h.workers) for k, h in self.inputs.items()}

    def missing_bytes(self, worker):
        """Bytes of its inputs that ``worker`` lacks; of a chunk it maps over a part of,
        that part's share."""
        over = self.msg.get("over")
        missing = 0
        for key, h in self.inputs.items():
            if worker not in h.workers:
                n = total_bytes(h.nbytes)
                if over is not None and key == over[0]:
                    n = n * (over[2] - over[1]) // max(len(h), 1)
                missing += n
        return missing
