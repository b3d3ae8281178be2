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


def sent_to_peers(dask_worker):
    """Bytes a dask worker has sent to other workers and clients (``get_data``) so far.

    >>> class Worker:
    ...     transfer_outgoing_bytes_total = 3
    >>> sent_to_peers(Worker())
    3
    """
    return dask_worker.transfer_outgoing_bytes_total


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
    # enough tasks for default chunks of many: the long ones start out in one or two
    "300 tasks of 1 ms, then 16 of 200 ms": [0.001] * 300 + [0.2] * 16,
    "16 tasks of 200 ms, then 300 of 1 ms": [0.2] * 16 + [0.001] * 300,
}


# the data pipeline: this many arrays of this many float64 elements (8 MB each)
PIPELINE = {"arrays": 64, "elements": 1_000_000}


def pipeline_input(i, elements):
    """Input array ``i`` of the data pipeline: ``elements`` float64s from ``i`` to ``i + 1``,
    so that every array differs and none is negative.

    >>> pipeline_input(2, 3)
    array([2. , 2.5, 3. ])
    """
    import numpy as np

    return np.linspace(i, i + 1, elements)


def stretch(array):
    """The pipeline's first map: ``2 * sqrt(a)``, a new array of the same size.

    >>> import numpy as np
    >>> stretch(np.array([1.0, 4.0]))
    array([2., 4.])
    """
    import numpy as np

    return np.sqrt(array) * 2.0


def centre(array):
    """The pipeline's second map: ``a - mean(a)``, a new array of the same size.

    >>> import numpy as np
    >>> centre(np.array([1.0, 3.0]))
    array([-1.,  1.])
    """
    return array - array.mean()


def summarize(arrays):
    """The pipeline's reduction: the elementwise total of every array (so every array's
    data must be in one place), told in three floats: its absolute sum, max and min.

    Any iterable of arrays will do, which lets the check compute it one array at a time.

    >>> import numpy as np
    >>> summarize([np.array([1.0, -2.0]), np.array([1.0, 1.0])])
    [3.0, 2.0, -1.0]
    """
    import numpy as np

    arrays = iter(arrays)
    total = np.array(next(arrays), dtype=float)  # a copy: inputs may be read-only
    for array in arrays:
        total += array
    return [float(np.abs(total).sum()), float(total.max()), float(total.min())]


def summarize_args(*arrays):
    """:func:`summarize` over its arguments (ray resolves refs given as arguments only).

    >>> import numpy as np
    >>> summarize_args(np.ones(2), np.ones(2))
    [4.0, 2.0, 2.0]
    """
    return summarize(arrays)


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

