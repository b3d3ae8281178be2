"""The work every system runs in the benchmark: importable, so it travels by reference."""
import os
import time


def noop(x):
    """Return ``x``: the cheapest task there is.

    >>> noop(3)
    3
    """
    return x


def inc(x):
    """``x + 1``: the tiny task of the round-trip benchmark.

    >>> inc(1)
    2
    """
    return x + 1


def nbytes(array):
    """The size of an array that had to come to this worker.

    >>> import numpy as np
    >>> nbytes(np.zeros(4))
    32
    """
    return int(array.nbytes)


def pid(_=None):
    """The process a task ran in (to find worker processes).

    >>> pid() == os.getpid()
    True
    """
    return os.getpid()


def sleep_for(seconds):
    """Take ``seconds`` and return them: a task of a known length, for makespans.

    >>> sleep_for(0.0)
    0.0
    """
    time.sleep(seconds)
    return seconds


# real work: task lengths in seconds, mapped in this order over 2 one-core workers
MAKESPAN = {
    "uniform 10 ms x 200": [0.01] * 200,
    "uniform 100 ms x 40": [0.1] * 40,
    "uniform 1 s x 4": [1.0] * 4,
    "one 1 s task, then 20 of 50 ms": [1.0] + [0.05] * 20,
    "20 tasks of 50 ms, then one of 1 s": [0.05] * 20 + [1.0],
}


def ideal_makespan(lengths, cores=2):
    """The makespan when each task, in order, goes to the first core that is free.

    >>> ideal_makespan([0.5, 0.5]), ideal_makespan([1.0] + [0.1] * 10), ideal_makespan([0.1] * 10 + [1.0])
    (0.5, 1.0, 1.5)
    """
    free = [0.0] * cores
    for length in lengths:
        i = free.index(min(free))
        free[i] += length
    return round(max(free), 9)

