"""Which workers a batch keeps at work: all of them for long tasks, few for tiny ones.

One pool sends at most some tens of thousands of messages a second
(:data:`~distributed3.scheduling.POOL_RATE`).  Tiny tasks spread over more cores than
that keeps busy only split the messages thinner -- fewer tasks to a frame, and a frame,
a reply and a report to the center for each -- so a batch of them stays on
:func:`~distributed3.scheduling.cores_worth_using` cores, and the rest of the cluster
is left alone.  Until a reply says how long its tasks take, a batch probes: its first
tasks go to ``PROBE_CORES`` cores, for ``PROBE_SECONDS`` counted from the first
message sent, never from the batch's start: placing ten thousand tasks on a thousand
workers takes longer than that itself.

>>> crowd = Crowd(["alice", "bob", "carol"])
>>> crowd.join("alice", 4); crowd.join("bob", 4)
>>> crowd.idle, crowd.full(message_seconds=None)
({'carol'}, True)
>>> crowd.crowded("carol", message_seconds=None)  # probing: 8 cores at work already
True
>>> crowd.crowded("carol", message_seconds=1e-5)  # a reply came: 2 cores are worth it
True
>>> crowd.crowded("carol", message_seconds=0.1)   # long tasks: every core
False
>>> crowd.crowded("bob", message_seconds=1e-5, runner=True)  # alice alone is enough
True
>>> crowd.at_work, crowd.leave("bob"), crowd.at_work, sorted(crowd.idle)
(4, None, 4, ['bob', 'carol'])
"""
from ..scheduling import PROBE_CORES, cores_worth_using

__all__ = ["Crowd"]


class Crowd:
    """The workers with tasks of one batch at work (``busy``: worker -> its cores),
    those stepping out of it (``leaving``), those with none (``idle``: the ``workers``
    at first, and any that join), and whether the batch still probes.  Kept as they
    change, so that offering a task costs no pass over a thousand idle workers."""

    def __init__(self, workers=()):
        self.idle = set(workers)
        self.busy = {}
        self.busy_cores = 0
        self.leaving = {}  # busy worker stepping out (tiny tasks) -> its cores
        self.leaving_cores = 0
        self.probing = True  # no reply yet, and PROBE_SECONDS not passed since the first send

    @property
    def at_work(self):
        """Cores with tasks of this batch, less those stepping out."""
        return self.busy_cores - self.leaving_cores

    def outside(self, worker):
        """Whether ``worker`` has no task of the batch at work, or steps out."""
        return worker not in self.busy or worker in self.leaving

    def join(self, worker, ncores):
        """``worker`` (``ncores`` cores) took a task of the batch."""
        if worker not in self.busy:
            self.busy[worker] = ncores
            self.busy_cores += ncores
            self.idle.discard(worker)

    def leave(self, worker):
        """``worker`` has no task of the batch left."""
        if worker in self.busy:
            self.busy_cores -= self.busy.pop(worker)
            if worker in self.leaving:
                self.leaving_cores -= self.leaving.pop(worker)
        self.idle.add(worker)

    def full(self, message_seconds):
        """Whether the cores at work take all one pool can send, for messages of
        ``message_seconds`` (``None``: no reply yet), so that an idle worker stays idle."""
        wanted = cores_worth_using(message_seconds)
        if wanted is None:  # until a reply says, or the probe ended: a few cores
            return self.probing and self.at_work >= PROBE_CORES
        return self.at_work >= wanted

    def crowded(self, worker, message_seconds, runner=False, pinned=False):
        """Whether ``worker`` should stay out of the batch (or, asked by one of its
        ``runner``-s, step out): the cores at work without it take all one pool can
        send.  Never while tasks wait for it alone (``pinned``).  A worker steps out
        whole: the others do not follow it meanwhile."""
        wanted = cores_worth_using(message_seconds)
        at_work = self.at_work
        if worker in self.leaving:
            if wanted is not None and at_work >= wanted and not pinned:
                return True
            self.leaving_cores -= self.leaving.pop(worker)  # needed again: it stays
        if pinned:
            return False
        if not runner:
            return self.full(message_seconds)
        if wanted is None:
            return False
        ncores = self.busy.get(worker, 0)
        if at_work - ncores < wanted:
            return False
        self.leaving[worker] = ncores
        self.leaving_cores += ncores
        return True
