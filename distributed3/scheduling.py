"""Placement decisions as pure functions: no sockets, no clocks, easy to test.

Inputs are plain tables -- ``who_has {key: {worker}}``, ``nbytes {key: int}``,
``ncores {worker: int}``, ``occupancy {worker: tasks in flight}`` -- and the
output is a worker.  The pool calls these; swapping a policy touches only here.
"""
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
