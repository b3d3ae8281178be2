"""The data pipeline workload: arrays put on the cluster, two chained maps, one reduction.

Each system runs the same work its own way (its ``pipeline(arrays)`` in
:mod:`distributed3.bench.systems`)::

    N arrays of 8 MB --put--> map stretch --> map centre --> summarize(all N), one task
                                                                  |
    parent  <------------------------ 3 floats ------------------+

Intermediates stay on the cluster where the system allows it (distributed3 handles,
dask futures, ray object refs); multiprocessing and concurrent.futures, which have no
cluster storage, ship every argument and result through the parent.  The reduction
needs every array on one worker, so bytes really move.  :func:`run_pipeline` times it
from the first put to the result in hand, checks the result against the same work
done here one array at a time (a broken system reports no time), and measures:

* ``moved_bytes``: bytes between workers, by the system's own counter (distributed3
  ``peer_bytes_in``, dask ``transfer_outgoing_bytes_total``); ``"n/a"`` for ray, whose
  workers on one node share one object store; absent where workers never exchange data;
* ``parent_bytes``: pickled bytes of what the parent sent and got back (the inputs and
  the result; for multiprocessing and concurrent.futures every intermediate too);
* ``peak_worker_mb``, ``peak_parent_mb``: the peak summed RSS of the worker processes,
  and of this (client / parent) process, sampled every 20 ms (:class:`PeakRSS`).
"""
import pickle
import time

from .memory import PeakRSS
from .tasks import PIPELINE, centre, pipeline_input, stretch, summarize

__all__ = ["pickled_nbytes", "pipeline_spec", "run_pipeline"]


def pipeline_spec(value):
    """``{"arrays": n, "elements": m}`` from a config's ``"pipeline"`` entry: ``True`` for
    the full size, or a dict overriding some of it.

    >>> pipeline_spec(True)
    {'arrays': 64, 'elements': 1000000}
    >>> pipeline_spec({"arrays": 8, "elements": 125_000})
    {'arrays': 8, 'elements': 125000}
    """
    return {**PIPELINE, **(value if isinstance(value, dict) else {})}


def pickled_nbytes(obj):
    """The bytes ``obj`` takes pickled (protocol 5, buffers counted, not copied).

    >>> import numpy as np
    >>> 8000 < pickled_nbytes([np.zeros(1000)]) < 8200
    True
    """
    buffers = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def expected(arrays):
    """The pipeline's result, computed here one array at a time.

    >>> import numpy as np
    >>> expected([np.array([1.0, 4.0]), np.array([0.0, 0.0])])    # 2 sqrt: [2, 4] -> [-1, 1]
    [2.0, 1.0, -1.0]
    """
    return summarize(centre(stretch(a)) for a in arrays)


def _close(got, want):
    return len(got) == len(want) and all(abs(g - w) <= 1e-9 * max(1.0, abs(w))
                                         for g, w in zip(got, want))  # fmt: skip


def run_pipeline(system, spec, warm_up=True):
    """Run ``system.pipeline`` on ``spec``'s arrays; the measures above, as a dict.

    With ``warm_up``, an untimed run goes first.  On a virtual machine, memory the guest
    has never touched faults in several times slower than memory it has used before
    (the same pipeline took 0.6 s or 2.4 s on the same cluster here, by that alone), so
    without it the first system in the run would pay for every later one.
    """
    arrays = [pipeline_input(i, spec["elements"]) for i in range(spec["arrays"])]
    want = expected(arrays)
    if warm_up:
        got, _ = system.pipeline(arrays)
        if not _close(got, want):
            raise AssertionError(f"{system.name} pipeline returned {got}, expected {want}")
    counter = getattr(system, "peer_bytes", None)
    before = counter() if counter else None
    with PeakRSS(system.worker_pids()) as peak:
        start = time.perf_counter()
        got, parent_bytes = system.pipeline(arrays)
        makespan = time.perf_counter() - start
    if not _close(got, want):
        raise AssertionError(f"{system.name} pipeline returned {got}, expected {want}")
    out = {"makespan": makespan, "parent_bytes": parent_bytes,
           "peak_worker_mb": peak.workers_mb, "peak_parent_mb": peak.parent_mb}  # fmt: skip
    if counter:
        out["moved_bytes"] = "n/a" if before is None else counter() - before
    return out
