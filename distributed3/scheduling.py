"""Placement and sizing decisions as pure functions: no sockets, no clocks, easy to test.

Inputs are plain tables -- ``who_has {key: {worker}}``, ``nbytes {key: int}``,
``ncores {worker: int}``, ``occupancy {worker: tasks in flight}`` -- and the
output is a worker (where a task runs, where scattered data goes, which queued task
an idle worker takes) or a number (how many tasks go in one message, from the task
times :class:`TaskTimes` learned).  The client calls these; swapping a policy
touches only here.
"""
import math
import pickle
from collections import defaultdict


def local_bytes(keys, who_has, nbytes):
    """Bytes of ``keys`` that each worker already holds.

    >>> local_bytes(["x", "y"], {"x": {"alice"}, "y": {"alice", "bob"}}, {"x": 10, "y": 5})
    {'alice': 15, 'bob': 5}
    """
    held = defaultdict(int)
    for key in keys:
        size = nbytes.get(key, 1)
        for worker in who_has.get(key, ()):
            held[worker] += size
    return dict(held)


def least_loaded(ncores, occupancy, among=None):
    """The worker with the most free cores (fewest tasks in flight per core).

    Ties go to the worker listed first in ``ncores``, so the choice is repeatable.

    >>> least_loaded({"alice": 2, "bob": 1}, {"alice": 2, "bob": 0})
    'bob'
    >>> least_loaded({"alice": 4, "bob": 1}, {"alice": 2, "bob": 1})
    'alice'
    >>> least_loaded({"alice": 4, "bob": 1}, {}, among=["bob"])
    'bob'
    """
    candidates = [w for w in ncores if among is None or w in among]
    if not candidates:
        raise ValueError("no workers to choose from")
    return min(candidates, key=lambda w: occupancy.get(w, 0) / max(ncores[w], 1))


def decide_worker(keys, who_has, nbytes, ncores, occupancy):
    """Where a task whose inputs are ``keys`` should run.

    The worker that already holds the most bytes of its inputs wins, so the
    fewest bytes move; among equals, and when no input is held by a live
    worker, the least loaded one.

    >>> who_has = {"x": {"alice"}, "y": {"bob"}}
    >>> nbytes = {"x": 100, "y": 10}
    >>> decide_worker(["x", "y"], who_has, nbytes, {"alice": 1, "bob": 1}, {})
    'alice'
    >>> decide_worker([], who_has, nbytes, {"alice": 1, "bob": 1}, {"alice": 1})
    'bob'
    >>> decide_worker(["x"], {"x": {"carol"}}, nbytes, {"alice": 1, "bob": 1}, {"alice": 1})
    'bob'
    """
    held = {w: b for w, b in local_bytes(keys, who_has, nbytes).items() if w in ncores}
    if not held:
        return least_loaded(ncores, occupancy)
    most = max(held.values())
    return least_loaded(ncores, occupancy, among=[w for w, b in held.items() if b == most])


def spread(n, ncores):
    """Assign ``n`` items to workers round-robin, weighted by their cores.

    >>> spread(5, {"alice": 2, "bob": 1})
    ['alice', 'bob', 'alice', 'alice', 'bob']
    >>> spread(2, {"alice": 0})
    ['alice', 'alice']
    """
    if not ncores:
        raise ValueError("no workers to spread over")
    ncores = {w: max(c, 1) for w, c in ncores.items()}  # a worker reporting 0 still counts
    slots = []
    for i in range(max(ncores.values())):
        slots.extend(w for w, c in ncores.items() if c > i)
    return [slots[i % len(slots)] for i in range(n)]


def split_by_worker(keys, who_has, preferred=None):
    """Group keys by one worker holding each, for one request per worker.

    A key held by several workers goes to ``preferred`` when it is among them,
    else to the holder that already serves the most keys of this call.

    >>> split_by_worker(["x", "y", "z"], {"x": {"alice"}, "y": {"alice", "bob"}, "z": {"bob"}})
    {'alice': ['x', 'y'], 'bob': ['z']}
    >>> split_by_worker(["y"], {"y": {"alice", "bob"}}, preferred="bob")
    {'bob': ['y']}
    """
    groups = defaultdict(list)
    for key in keys:
        holders = who_has.get(key)
        if not holders:
            raise KeyError(key)
        if preferred in holders:
            worker = preferred
        else:
            worker = max(sorted(holders, key=str), key=lambda w: len(groups.get(w, ())))
        groups[worker].append(key)
    return dict(groups)


def steal_choice(queues, cost, limit):
    """The queue whose last task an idle worker should take, or ``None``: the longest
    queue whose last task's ``cost`` (bytes of inputs the idle worker lacks) is at most
    ``limit`` -- moving those costs less than waiting for the busy worker.

    >>> queues = {"alice": ["a1", "a2", "a3"], "bob": ["b1"]}
    >>> cost = {"a3": 10_000, "b1": 100}.get
    >>> steal_choice(queues, cost, 4096)
    'bob'
    >>> steal_choice(queues, cost, 100_000)
    'alice'
    >>> steal_choice({"alice": []}, cost, 4096) is None
    True
    """
    for owner, queue in sorted(queues.items(), key=lambda kv: len(kv[1]), reverse=True):
        if not queue:
            break
        if cost(queue[-1]) <= limit:
            return owner
    return None


def pipeline_depth(seconds, most=64):
    """Tasks to keep in flight per core on a worker whose messages take ``seconds`` of
    work each: several for short ones, whose reply and next message would otherwise
    leave the core idle; one for long ones, which must not wait on a worker behind
    another while a core elsewhere is free.  ``None`` (not known yet): one.

    >>> [pipeline_depth(s) for s in (None, 1e-6, 0.0001, 0.0008, 0.003, 0.02, 0.05, 2.0)]
    [1, 64, 20, 4, 2, 2, 1, 1]

    Below a millisecond, about ``QUEUED_SECONDS`` of work: the messages of that many go
    out and come back together (see :mod:`~distributed3.core.channel`), and a map's
    end waits for no more than that.  Two in flight cost a map at most one such task at
    its end; below 50 ms that is less than the round trips saved.
    """
    if seconds is None or seconds >= 0.05:
        return 1
    if seconds >= 0.001:
        return min(2, most)
    return max(1, min(most, max(4, int(QUEUED_SECONDS / max(seconds, 1e-9)))))


QUEUED_SECONDS = 0.002  # of tiny tasks, in flight per core

POOL_RATE = 50_000  # messages a second one pool sends at most (no-op tasks)
# a batch's first tasks go to this many cores for this long, unless a reply comes first:
# the tasks' length is then known (see cores_worth_using), at the cost of that long idle
# for the other cores when tasks are long
PROBE_CORES = 8
PROBE_SECONDS = 0.005


def cores_worth_using(seconds, rate=POOL_RATE):
    """How many cores one pool can keep busy with messages of ``seconds`` of work each:
    it sends at most ``rate`` a second, so a batch of tiny tasks spread over more
    workers than that only splits its messages thinner (fewer to a frame, more frames
    for everyone).  ``None`` (not known yet): no bound.  Never fewer than 2.

    >>> [cores_worth_using(s) for s in (None, 1e-5, 1e-4, 1e-3, 0.02)]
    [None, 2, 5, 50, 1000]
    """
    if seconds is None:
        return None
    return max(2, math.ceil(seconds * rate))

CHUNK_SECONDS = 0.002  # work per message, at least, once a function's task time is known
MAX_CHUNK = 10_000


def adaptive_chunksize(ntasks, ncores, seconds=None):
    """Tasks per message when the caller did not say: 1 for small maps, else about 8 per
    core -- but, when a task is known to take ``seconds``, at least ``CHUNK_SECONDS`` of
    work per message, however many cores there are: tiny tasks spread thin over many
    workers cost more in messages than they gain.

    >>> adaptive_chunksize(10, 2), adaptive_chunksize(10_000, 2), adaptive_chunksize(10**6, 2)
    (1, 625, 10000)
    >>> adaptive_chunksize(10_000, 64), adaptive_chunksize(10_000, 64, seconds=1e-5)
    (20, 200)
    >>> adaptive_chunksize(100, 64, seconds=1e-6), adaptive_chunksize(100, 64, seconds=0.1)
    (100, 1)
    """
    ncores = max(ncores, 1)
    size = 1 if ntasks <= 32 * ncores else -(-ntasks // (8 * ncores))
    if seconds is not None:
        size = max(size, int(CHUNK_SECONDS / max(seconds, 1e-9)))
    return max(1, min(MAX_CHUNK, size, ntasks))


GRAPH_CHUNK = 64  # the most ready tasks of a graph sent in one message


def graph_chunksize(seconds, most=GRAPH_CHUNK):
    """Ready tasks of a graph per message once a task is known to take ``seconds``: one
    each until then, and for tasks of half a millisecond or more (a message's elements
    run one after the other, so long ones must not share); tiny ones together, about
    ``CHUNK_SECONDS`` of work per message.

    >>> [graph_chunksize(s) for s in (None, 1.0, 0.0004, 0.0001, 1e-6)]
    [1, 1, 5, 20, 64]
    """
    if seconds is None or seconds >= 0.0005:
        return 1
    return max(1, min(most, int(CHUNK_SECONDS / max(seconds, 1e-9))))


ROOT_BYTES = 4_000_000  # per core: results of a graph's roots that may be on their way


def root_window(ncores, nbytes):
    """How many of a graph's roots (tasks that read nothing the graph makes: loading,
    generating data) may run at once, when their results take ``nbytes`` each: two per
    core until that is known, and as many as ``ROOT_BYTES`` per core hold; tiny ones
    without limit, for throughput.  Started all at once, the roots of a reduction over
    more data than the workers hold would fill them before the first sum is taken.

    >>> root_window(2, None), root_window(2, 1_000_000), root_window(2, 100)
    (4, 8, 80000)
    """
    floor = 2 * max(ncores, 1)
    if nbytes is None:
        return floor
    return max(floor, int(ROOT_BYTES * max(ncores, 1) // max(nbytes, 1)))


class TaskTimes:
    """Seconds a task took on the workers, as the chunks' replies said, per function and
    keyword arguments (a map's message ``base``): a running mean over the last few
    maps, for a bounded number of them.  Chunks whose every task failed say nothing.

    >>> times = TaskTimes()
    >>> times.note({"function": b"f"}, 0.004, 2); times.get({"function": b"f"})
    0.002
    >>> times.get({"function": b"f", "kwargs": {"n": 10**6}}) is None
    True
    """

    def __init__(self, size=256):
        self.size = size
        self.seconds = {}

    @staticmethod
    def _key(base):
        if base.get("function") is None:  # a stateful pool's instances: no function
            return None
        try:
            return pickle.dumps((base["function"], base.get("kwargs")), protocol=5)
        except Exception:
            return None

    def get(self, base):
        key = self._key(base)
        return None if key is None else self.seconds.get(key)

    def note(self, base, seconds, ntasks):
        key = self._key(base)
        if key is None or not ntasks:
            return
        mean = seconds / ntasks
        old = self.seconds.pop(key, None)
        if old is None and len(self.seconds) >= self.size:
            self.seconds.pop(next(iter(self.seconds)))  # the least recently noted
        self.seconds[key] = mean if old is None else (old + mean) / 2
