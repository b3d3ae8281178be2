"""Which workers a batch keeps at work: all of them for long tasks, few for tiny ones.

One pool sends at most some tens of thousands of messages a second
(:data:`~distributed3.scheduling.POOL_RATE`).  Tiny tasks spread over more cores than
that keeps busy only split the messages thinner -- fewer tasks to a frame, and a frame,
a reply and a report to the center for each -- so a batch of them stays on
:func:`~distributed3.scheduling.cores_worth_using` cores, and the rest of the cluster
is left alone.  Until a reply says how long its tasks take, a batch probes: its first
tasks go to ``PROBE_CORES`` cores, twice as many after each ``PROBE_SECONDS`` without
a reply (counted from the first message sent, never from the batch's start: placing
ten thousand tasks on a thousand workers takes longer than that), so that long tasks
reach every core within a few steps while a reply that was late once (a busy loop,
a collection) spreads tiny ones only a little wider.

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
import asyncio
import heapq
import itertools

from ..scheduling import PROBE_CORES, PROBE_SECONDS, cores_worth_using

__all__ = ["Crowd", "Reach"]

_turns = itertools.count()  # rounds started, for turns among equally idle workers


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
        self.probing = True  # no reply yet, and fewer than all cores probed
        self.probe_cores = PROBE_CORES
        self.changes = 0  # workers that joined or left, for caches of what busy ones hold

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
            self.changes += 1

    def leave(self, worker):
        """``worker`` has no task of the batch left."""
        if worker in self.busy:
            self.busy_cores -= self.busy.pop(worker)
            self.changes += 1
            if worker in self.leaving:
                self.leaving_cores -= self.leaving.pop(worker)
        self.idle.add(worker)

    def room(self, message_seconds):
        """How many more cores are worth putting to work for messages of
        ``message_seconds`` (``None``: no reply yet); ``None``: no bound.

        >>> Crowd().room(None), Crowd().room(1e-5), Crowd().room(1.0)
        (8, 2, 50000)
        """
        wanted = cores_worth_using(message_seconds)
        if wanted is None:
            if not self.probing:
                return None
            wanted = self.probe_cores  # until a reply says: a few cores, then more
        return max(0, wanted - self.at_work)

    def widen_probe(self, ncores):
        """No reply for another ``PROBE_SECONDS``: probe twice as many cores, and stop
        probing once that is all ``ncores``.  Whether it still probes.

        >>> crowd = Crowd()
        >>> crowd.widen_probe(20), crowd.probe_cores, crowd.widen_probe(20)
        (True, 16, False)
        """
        self.probe_cores *= 2
        self.probing = self.probe_cores < ncores
        return self.probing

    def full(self, message_seconds):
        """Whether the cores at work take all one pool can send, for messages of
        ``message_seconds`` (``None``: no reply yet), so that an idle worker stays idle."""
        return self.room(message_seconds) == 0

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


class Reach:
    """Which workers a :class:`~distributed3.client.dispatch.Batch` offers its tasks
    to, through its :class:`Crowd`: in a round, when the probe widens, when replies say
    its tasks are longer than thought; and how many tasks it may have in flight.

    Mixed into ``Batch``, which provides ``session``, ``crowd``, ``message_seconds``,
    ``pinned``, ``lost``, ``resting``, ``need``, ``probe``, ``add_worker``, ``queued``
    and the rest of its state.

    >>> sorted(m for m in vars(Reach) if not m.startswith("__"))[:3]
    ['_crowded', '_least_loaded_idle', '_probe_later']
    """

    def capacity(self):
        """How many tasks may be in flight now: every slot of the workers at work, and
        one a core for those that may still join them (see
        :meth:`~distributed3.client.crowd.Crowd.room`); all slots when any may."""
        cores, crowd = self.session.cores, self.crowd
        room = crowd.room(self.message_seconds)
        state = (id(cores), len(cores), frozenset(self.lost), frozenset(self.resting),
                 self.careful, self.depth_changes,
                 None if room is None else crowd.changes)  # fmt: skip
        if self._capacity is None or self._capacity[0] != state:
            total = sum(self._slots(w) for w in (cores if room is None else crowd.busy)
                        if w not in self.lost and w not in self.resting)  # fmt: skip
            self._capacity = (state, total)
        return self._capacity[1] + (room or 0)

    def working_slots(self):
        """How many tasks the workers at work on the batch may have in flight: their
        cores times the depth their replies taught (see ``_slots``)."""
        return sum(self._slots(w) for w in self.crowd.busy)

    def _round_order(self):
        """The workers a round offers tasks to, the least occupied first, ties in turn
        (so that one-message calls, an apply, do not all land on the same idle worker):
        all of them; or, while only a few more cores are worth using (tiny tasks, see
        :class:`~distributed3.client.crowd.Crowd`), those at work, the holders of
        pinned tasks and that few of the idle -- not a pass over a thousand workers."""
        cores, occupancy, crowd = self.session.cores, self.session.occupancy, self.crowd
        workers = list(cores)
        if workers:
            turn = next(_turns) % len(workers)
            workers = workers[turn:] + workers[:turn]

        def load(w):
            return occupancy[w] / cores[w]

        room = crowd.room(self.message_seconds)
        if room is None:
            return sorted(workers, key=load)
        # at work and holders of pinned tasks: those still there (one may have just died)
        chosen = dict.fromkeys([*(w for w in crowd.busy if w in cores),
                                *(w for w, q in self.pinned.items() if q and w in cores),
                                *self._least_loaded_idle(workers, room, load)])  # fmt: skip
        return sorted(chosen, key=load)  # ties: at work, holders, then the idle in turn

    def _least_loaded_idle(self, workers, room, load):
        """The ``room`` least loaded of the idle ``workers``, ties in their order: the
        first ``room`` with nothing in flight when there are that many -- a look at a
        few workers of a thousand, not at each -- else the least loaded of them all."""
        if room <= 0:
            return []
        crowd, occupancy = self.crowd, self.session.occupancy

        def idle(w):
            return (w not in crowd.busy and w not in self.lost and w not in self.resting
                    and (not self.need or self._eligible(w)))  # fmt: skip

        found = []
        for w in workers:
            if not occupancy[w] and idle(w):
                found.append(w)
                if len(found) == room:
                    return found
        return heapq.nsmallest(room, [w for w in workers if idle(w)], key=load)

    def _probe_later(self):
        self.probe = asyncio.get_running_loop().call_later(PROBE_SECONDS, self._widen_probe)

    def _crowded(self, worker, runner=False):
        """Whether ``worker`` should stay out of this batch, or (asked by a ``runner``)
        step out: see :class:`~distributed3.client.crowd.Crowd`."""
        return self.crowd.crowded(worker, self.message_seconds, runner,
                                  pinned=bool(self.pinned.get(worker)))  # fmt: skip

    def _widen_probe(self):
        """``PROBE_SECONDS`` since the first send or the last widening, and no reply."""
        self.probe = False
        if self.message_seconds is not None or not self.remaining:
            return
        if self.crowd.widen_probe(sum(self.session.cores.values())):
            self._probe_later()
        self._widen()
        if self.on_room is not None:
            self.on_room()

    def _widen(self):
        """Offer the queued tasks to idle workers while the cores at work are fewer than
        the tasks' length makes worth using (longer replies came: see :meth:`_crowded`)."""
        crowd, cores = self.crowd, self.session.cores
        if not self.queued() or crowd.full(self.message_seconds):
            return  # most replies: before a list of the idle workers is made
        for worker in list(crowd.idle):
            if not self.queued() or crowd.full(self.message_seconds):
                return
            if worker not in cores or (self.need and not self._eligible(worker)):
                crowd.idle.discard(worker)  # departed, or without the resources asked for
                continue
            self.add_worker(worker)
            if not self.free and not self.runners[worker]:
                return  # only others' pinned tasks wait, too big to steal: for anyone
