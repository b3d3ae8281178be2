"""The task-graph workloads: dask collections computed by each system's dask scheduler.

Every system gets the same collections and runs them through ``dask.compute(x,
scheduler=get)``, where ``get`` is its own (``s.graph_get``: ``pool.get``,
dask.distributed's ``Client.get``, ``ray.util.dask.ray_dask_get``, dask's local
threaded scheduler)::

    tree N      N no-op tasks: N/2 leaves inc(i), then add() in pairs down to one
                (graph overhead: tasks/s, including dask's own graph handling)
    mean        the mean of a random dask.array of B bytes in C chunks
    matmul      (x @ x).sum() of a random n x n array in 1,024 chunks

:func:`run_graphs` checks each answer (the tree's exactly, the arrays' against what
uniform random numbers give) and reports tasks/s, or seconds and the peak summed RSS of
the workers while it ran (:class:`~distributed3.bench.memory.PeakRSS`).

>>> graph_spec(True)["tree"], graph_spec(False)
([10000, 100000], None)
"""
import time

from .memory import PeakRSS

__all__ = ["graph_spec", "run_graphs", "tree"]

FULL = {"tree": [10_000, 100_000], "mean": {"bytes": 2_000_000_000, "chunks": 200},
        "matmul": {"n": 4096, "chunks": 32}}  # fmt: skip
QUICK = {"tree": [2_000], "mean": {"bytes": 200_000_000, "chunks": 20},
         "matmul": {"n": 1024, "chunks": 8}}  # fmt: skip


def graph_spec(value):
    """The graph workloads from a config's ``"graphs"`` entry: ``True`` for the full
    sizes, ``"quick"`` for small ones, a dict for its own, false for none."""
    if not value:
        return None
    if value is True:
        return FULL
    if value == "quick":
        return QUICK
    return value


def _inc(x):
    return x + 1


def _add(a, b):
    return a + b


def tree(n):
    """A delayed tree reduction of about ``n`` tasks, and its answer.

    >>> x, answer = tree(7)
    >>> x.compute(scheduler="sync") == answer
    True
    """
    from dask import delayed

    leaves = max(n // 2, 1)
    layer = [delayed(_inc, pure=True)(i) for i in range(leaves)]
    while len(layer) > 1:
        layer = [delayed(_add, pure=True)(*layer[i:i + 2]) if i + 1 < len(layer) else layer[i]
                 for i in range(0, len(layer), 2)]  # fmt: skip
    return layer[0], sum(range(1, leaves + 1))


def run_graphs(get, spec, worker_pids, caps=None):
    """``{workload: figures}`` for the scheduler ``get``; ``caps`` (``{"tree": n}``)
    limits the trees a slow system runs."""
    import dask
    import dask.array as da

    caps = caps or {}
    out = {}
    # the workers import dask.array and numpy.random once, before the first timing
    dask.compute(da.random.RandomState(0).random(4, chunks=2).sum(), scheduler=get)
    for n in spec.get("tree", ()):
        if n > caps.get("tree", n):
            continue
        x, answer = tree(n)
        start = time.perf_counter()
        (result,) = dask.compute(x, scheduler=get)
        elapsed = time.perf_counter() - start
        if result != answer:
            raise AssertionError(f"tree {n}: {result} != {answer}")
        out[f"tree {n}"] = {"tasks_per_s": (2 * max(n // 2, 1) - 1) / elapsed}
    if "mean" in spec:
        size, chunks = spec["mean"]["bytes"], spec["mean"]["chunks"]
        x = da.random.RandomState(0).random(size // 8, chunks=size // 8 // chunks)
        out["mean"] = _timed_array(get, x.mean(), worker_pids, lambda v: abs(v - 0.5) < 0.01)
    if "matmul" in spec:
        n, chunks = spec["matmul"]["n"], spec["matmul"]["chunks"]
        x = da.random.RandomState(1).random((n, n), chunks=n // chunks)
        expect = n**3 / 4  # E[x] = 1/2: each entry of x @ x sums n products of mean 1/4
        out["matmul"] = _timed_array(get, (x @ x).sum(), worker_pids,
                                     lambda v: abs(v / expect - 1) < 0.01)  # fmt: skip
    return out


def _timed_array(get, expr, worker_pids, check):
    import dask

    with PeakRSS(worker_pids()) as peak:
        start = time.perf_counter()
        (value,) = dask.compute(expr, scheduler=get)
        elapsed = time.perf_counter() - start
    if not check(float(value)):
        raise AssertionError(f"wrong answer: {value}")
    return {"seconds": elapsed, "peak_worker_mb": peak.workers_mb}
