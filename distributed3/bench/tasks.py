"""The work every system runs in the benchmark: importable, so it travels by reference."""
import os


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
