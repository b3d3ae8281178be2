"""Each system under test, behind one interface: a local cluster of 2 workers x 1 core.

``with SYSTEMS[name]() as s:`` starts it; then

* ``s.map(n)`` -- ``gather(map(noop, range(n)))`` with the system's own chunking
  (``s.map1``: one message per task, where the system has that choice),
* ``s.submits(n)`` -- ``n`` no-op tasks submitted one call at a time in a loop, then
  their results; ``s.imap(n)`` -- the values of a lazy ``imap`` over ``range(n)``,
* ``s.roundtrip_once()`` -- ``apply(inc, 1)`` and getting its result,
* ``s.transfer(size, repeat)`` -- median MB/s pulling a ``size``-byte array from one
  worker to the other,
* ``s.moved_bytes()``, ``s.center_messages()`` -- distributed3's locality and center load,
* ``s.sleeps(lengths)`` -- ``gather(map(sleep_for, lengths))`` as a user would write it
  (the system's default chunks), for the makespan of tasks that take time,
* ``s.pipeline(arrays)`` -- put the arrays on the cluster, map ``stretch``, map
  ``centre`` over its results, ``summarize`` them all in one task; returns its result
  and the pickled bytes the parent sent and received (see :mod:`distributed3.bench.pipeline`),
* ``s.peer_bytes()`` -- bytes the workers have sent each other so far, by the system's
  own counter (``None`` where there is none to read),
* ``s.worker_pids()`` -- the worker processes, for their resident memory,
* ``s.graph_get`` -- the system's dask scheduler, for the task-graph workloads (see
  :mod:`distributed3.bench.graphs`); ``dask-threads`` is dask's local threaded
  scheduler, with those workloads only.

:mod:`distributed3.bench.one` times them.  ``STARTUP[name]`` is a script that starts
the same cluster in a new interpreter and prints the first result.  A system lacks
the methods it has no counterpart for.
"""
import time

import numpy as np

from .pipeline import pickled_nbytes
from .tasks import (centre, inc, nbytes, noop, pid, sent_to_peers, sleep_for, stretch, summarize,
                    summarize_args)
from .timing import median_of

__all__ = ["SYSTEMS", "STARTUP", "available"]


class Distributed3:
    name = "distributed3"

    def __init__(self, n_workers=2):
        self.n_workers = n_workers

    def __enter__(self):
        from distributed3 import Pool

        self.pool = Pool(n_workers=self.n_workers)
        self.pool.gather(self.pool.map(noop, range(200)))  # connections and caches warm
        return self

    def __exit__(self, *exc):
        self.pool.close()

    @property
    def graph_get(self):
        return self.pool.get

    def map(self, n):
        out = self.pool.gather(self.pool.map(noop, range(n)))
        assert len(out) == n

    def map1(self, n):
        out = self.pool.gather(self.pool.map(noop, range(n), chunksize=1))
        assert len(out) == n

    def submits(self, n):
        assert len(self.pool.gather([self.pool.submit(noop, i) for i in range(n)])) == n

    def imap(self, n):
        assert sum(1 for _ in self.pool.imap(noop, range(n))) == n

    def roundtrip_once(self):
        assert self.pool.apply(inc, (1,)).get() == 2

    def sleeps(self, lengths):
        assert self.pool.gather(self.pool.map(sleep_for, lengths)) == lengths

    def transfer(self, size, repeat):
        pool = self.pool
        a, b = sorted(pool.available_cores)
        [data] = pool.scatter([np.ones(size // 8)])
        holder = next(iter(pool.who_has([data])[data.key]))
        target = b if holder == a else a

        def measure():
            start = time.perf_counter()
            pool.session.sync(pool.session.rpc(target).fetch_data(who_has={data.key: [holder]}))
            elapsed = time.perf_counter() - start
            pool.session.sync(pool.session.rpc(target).delete_data(keys=[data.key]))  # untimed
            return elapsed

        measure()  # warms up
        return size / median_of(measure, repeat) / 1e6

    def moved_bytes(self, narrays=8, rounds=3):
        """Bytes workers pulled from each other while mapping over data already there."""
        pool = self.pool
        data = pool.scatter([np.ones(125_000) * i for i in range(narrays)])  # 1 MB each
        before = sum(i["peer_bytes_in"] for i in pool.worker_info().values())
        for _ in range(rounds):
            sums = pool.map(lambda a: float(a.sum()), data)
            doubled = pool.map(lambda a: a * 2, data)
            assert pool.gather(sums) == [125_000.0 * i for i in range(narrays)]
            assert pool.gather(pool.map(nbytes, doubled)) == [1_000_000] * narrays
        after = sum(i["peer_bytes_in"] for i in pool.worker_info().values())
        return after - before

    def pipeline(self, arrays):
        pool = self.pool
        # a nested call drops each step's handles, as a user's would; the next step's
        # recipes still hold them (to recompute a lost result), and so their data
        centred = pool.map(centre, pool.map(stretch, pool.scatter(arrays)))
        summary = pool.apply(summarize, [centred])
        del centred
        result = summary.get()
        return result, pickled_nbytes(arrays) + pickled_nbytes(result)

    def peer_bytes(self):
        return sum(i["peer_bytes_in"] for i in self.pool.worker_info().values())

    def worker_pids(self):
        return sorted(info["pid"] for info in self.pool.worker_info().values())

    def center_messages(self):
        counters = self.pool.session.sync(self.pool.session.center("counters"))
        return sum(n for op, n in counters.items() if op != "bytes_in")


class Distributed3Apart(Distributed3):
    """distributed3 as deployed: a pool connected to a ``dcenter`` and ``dworker``
    processes started through ``bin/``, not to the cluster ``Pool()`` starts itself."""

    name = "distributed3-dcenter"

    def __enter__(self):
        from distributed3 import Pool
        from distributed3.testing import process_cluster

        self.cluster = process_cluster(nworkers=self.n_workers)
        address, _, _ = self.cluster.__enter__()
        try:
            self.pool = Pool(address)
            self.pool.gather(self.pool.map(noop, range(200)))  # connections, caches warm
        except BaseException:
            self.cluster.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.pool.close()
        finally:
            self.cluster.__exit__(*exc)


def _pool_processes():
    """The pids of this process's multiprocessing children: a pool's workers, here."""
    import multiprocessing

    return [p.pid for p in multiprocessing.active_children()]


class Multiprocessing:
    name = "multiprocessing"

    def __init__(self, n_workers=2):
        self.n_workers = n_workers

    def __enter__(self):
        import multiprocessing

        self.pool = multiprocessing.Pool(self.n_workers)
        self.pool.map(noop, range(200))
        return self

    def __exit__(self, *exc):
        self.pool.terminate()

    def map(self, n):  # its default chunks
        assert len(self.pool.map(noop, range(n))) == n

    def map1(self, n):
        assert len(self.pool.map(noop, range(n), chunksize=1)) == n

    def submits(self, n):
        assert len([r.get() for r in [self.pool.apply_async(noop, (i,)) for i in range(n)]]) == n

    def imap(self, n):
        assert sum(1 for _ in self.pool.imap(noop, range(n))) == n

    def roundtrip_once(self):
        assert self.pool.apply(inc, (1,)) == 2

    def sleeps(self, lengths):
        assert self.pool.map(sleep_for, lengths) == lengths

    def pipeline(self, arrays):
        # no storage on the pool: every result comes back here and goes out again
        stretched = self.pool.map(stretch, arrays)
        centred = self.pool.map(centre, stretched)
        through = pickled_nbytes(arrays) + 2 * pickled_nbytes(stretched)
        del stretched
        result = self.pool.apply(summarize, (centred,))
        return result, through + 2 * pickled_nbytes(centred) + pickled_nbytes(result)

    def worker_pids(self):
        return _pool_processes()


class ProcessPool:
    name = "concurrent.futures"

    def __init__(self, n_workers=2):
        self.n_workers = n_workers

    def __enter__(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(self.n_workers, mp_context=multiprocessing.get_context())
        list(self.ex.map(noop, range(200)))
        return self

    def __exit__(self, *exc):
        self.ex.shutdown(cancel_futures=True)

    def map1(self, n):  # chunksize=1 is its default
        assert len(list(self.ex.map(noop, range(n)))) == n

    def submits(self, n):
        assert len([f.result() for f in [self.ex.submit(noop, i) for i in range(n)]]) == n

    def roundtrip_once(self):
        assert self.ex.submit(inc, 1).result() == 2

    def sleeps(self, lengths):
        assert list(self.ex.map(sleep_for, lengths)) == lengths

    def pipeline(self, arrays):
        # no storage on the pool: every result comes back here and goes out again
        stretched = list(self.ex.map(stretch, arrays))
        centred = list(self.ex.map(centre, stretched))
        through = pickled_nbytes(arrays) + 2 * pickled_nbytes(stretched)
        del stretched
        result = self.ex.submit(summarize, centred).result()
        return result, through + 2 * pickled_nbytes(centred) + pickled_nbytes(result)

    def worker_pids(self):
        return _pool_processes()


class Dask:
    name = "dask"

    def __init__(self, n_workers=2):
        self.n_workers = n_workers

    def __enter__(self):
        import logging

        from dask.distributed import Client, LocalCluster

        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.cluster = LocalCluster(n_workers=self.n_workers, threads_per_worker=1,
                                    dashboard_address=None)  # fmt: skip
        self.client = Client(self.cluster)
        self.client.gather(self.client.map(noop, range(200), pure=False))
        return self

    def __exit__(self, *exc):
        self.client.close()
        self.cluster.close()

    @property
    def graph_get(self):
        return self.client.get

    def map1(self, n):
        out = self.client.gather(self.client.map(noop, range(n), pure=False))
        assert len(out) == n

    def submits(self, n):
        futures = [self.client.submit(noop, i, pure=False) for i in range(n)]
        assert len(self.client.gather(futures)) == n

    def roundtrip_once(self):
        assert self.client.submit(inc, 1, pure=False).result() == 2

    def sleeps(self, lengths):
        assert self.client.gather(self.client.map(sleep_for, lengths, pure=False)) == lengths

    def transfer(self, size, repeat):
        client = self.client
        a, b = sorted(client.scheduler_info()["workers"])

        def measure():
            # hash=False: equal arrays would share a key, and B could still hold the last one
            data = client.scatter(np.ones(size // 8), workers=[a], hash=False)
            start = time.perf_counter()
            assert client.submit(nbytes, data, workers=[b], pure=False).result() == size
            return time.perf_counter() - start

        measure()  # warms up
        return size / median_of(measure, repeat) / 1e6

    def pipeline(self, arrays):
        client = self.client
        # futures dropped here are released once the tasks that need them are done
        centred = client.map(centre, client.map(stretch, client.scatter(arrays)))
        summary = client.submit(summarize, centred)
        del centred
        result = summary.result()
        return result, pickled_nbytes(arrays) + pickled_nbytes(result)

    def peer_bytes(self):
        # bytes each worker served to others (get_data); the client's gather of the
        # tiny result is the only other reader here
        return sum(self.client.run(sent_to_peers).values())

    def worker_pids(self):
        return sorted(self.client.run(pid).values())


class Ray:
    name = "ray"

    def __enter__(self):
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
        self.ray = ray
        self.noop, self.inc, self.pid, self.sleep_for = (
            ray.remote(f) for f in (noop, inc, pid, sleep_for))
        self.stretch, self.centre, self.summarize = (
            ray.remote(f) for f in (stretch, centre, summarize_args))
        ray.get([self.noop.remote(i) for i in range(200)])
        return self

    def __exit__(self, *exc):
        self.ray.shutdown()

    @property
    def graph_get(self):
        from ray.util.dask import ray_dask_get

        return ray_dask_get

    def map1(self, n):
        assert len(self.ray.get([self.noop.remote(i) for i in range(n)])) == n

    def submits(self, n):  # a remote call is a submit: the same loop as map1
        self.map1(n)

    def roundtrip_once(self):
        assert self.ray.get(self.inc.remote(1)) == 2

    def sleeps(self, lengths):
        assert self.ray.get([self.sleep_for.remote(x) for x in lengths]) == lengths

    def pipeline(self, arrays):
        ray = self.ray
        # refs dropped here are released once the tasks that need them are done
        centred = [self.centre.remote(self.stretch.remote(ray.put(a))) for a in arrays]
        summary = self.summarize.remote(*centred)
        del centred
        result = ray.get(summary)
        return result, pickled_nbytes(arrays) + pickled_nbytes(result)

    def peer_bytes(self):
        """None: on one node every worker reads one shared-memory object store, so no
        bytes go worker to worker; ray keeps no counter of its in-store reads."""
        return None

    def worker_pids(self):
        return sorted(set(self.ray.get([self.pid.remote() for _ in range(20)])))


class DaskThreads:
    """dask's local threaded scheduler, two threads: the task graphs only."""

    name = "dask-threads"

    def __enter__(self):
        import functools

        import dask.threaded

        self.graph_get = functools.partial(dask.threaded.get, num_workers=2)
        return self

    def __exit__(self, *exc):
        pass

    def graph_pids(self):
        import os

        return [os.getpid()]


SYSTEMS = {s.name: s for s in (Distributed3, Distributed3Apart, Multiprocessing, ProcessPool,
                               Dask, Ray, DaskThreads)}  # fmt: skip

_FIRST = "from distributed3.bench.tasks import inc\n"
STARTUP = {
    "python": "print(2)",
    "distributed3": _FIRST + "from distributed3 import Pool\n"
    "pool = Pool(n_workers=2)\nprint(pool.apply(inc, (1,)).get(), flush=True)\npool.close()",
    "multiprocessing": _FIRST + "import multiprocessing\nif __name__ == '__main__':\n"
    "    p = multiprocessing.Pool(2)\n"
    "    print(p.apply(inc, (1,)), flush=True)\n    p.terminate()",
    "concurrent.futures": _FIRST + "from concurrent.futures import ProcessPoolExecutor\n"
    "if __name__ == '__main__':\n    with ProcessPoolExecutor(2) as ex:\n"
    "        print(ex.submit(inc, 1).result(), flush=True)",
    "dask": _FIRST + "from dask.distributed import Client, LocalCluster\n"
    "if __name__ == '__main__':\n"
    "    c = Client(LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None))\n"
    "    print(c.submit(inc, 1).result(), flush=True)\n    c.close()",
    "ray": _FIRST + "import ray\nray.init(num_cpus=2, include_dashboard=False)\n"
    "print(ray.get(ray.remote(inc).remote(1)), flush=True)\nray.shutdown()",
}


def available(name):
    """Whether ``name`` can run here (dask and ray are optional: the ``bench`` extra).

    >>> available("distributed3"), available("no-such-system")
    (True, False)
    """
    import importlib.util

    modules = {"dask": "dask.distributed", "ray": "ray", "dask-threads": "dask"}
    if name not in SYSTEMS and name not in STARTUP:
        return False
    module = modules.get(name)
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
