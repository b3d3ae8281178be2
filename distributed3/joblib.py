"""A joblib parallel backend: ``joblib.Parallel`` (and scikit-learn's ``n_jobs``) on the cluster.

Importing this module registers the backend under the name ``"distributed3"``::

    import joblib
    import distributed3.joblib  # noqa: F401 -- registers the backend

    with joblib.parallel_backend("distributed3", pool=pool):     # a pool of yours
        joblib.Parallel()(joblib.delayed(f)(x) for x in xs)
    with joblib.parallel_backend("distributed3"):                # a local cluster,
        ...                                                      # started once

Each of joblib's batches is one task, sent through ``pool.executor()`` (an
:class:`~distributed3.client.executor.Executor`: at most two per core out at once, the
rest cancellable when a task fails); joblib sizes the batches from how long
they take.  Without ``pool`` or ``address``, one local cluster is started on first use
and kept for every later ``Parallel`` call of the process, stopped at exit.

>>> import joblib
>>> with joblib.parallel_backend("distributed3", pool=pool):
...     joblib.Parallel(n_jobs=-1)(joblib.delayed(pow)(2, n) for n in range(5))
[1, 2, 4, 8, 16]
"""
import atexit
import threading

import joblib
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from .client.executor import Executor
from .client.pool import Pool

__all__ = ["Distributed3Backend"]

_default = None  # the local pool of the backends given neither pool nor address
_lock = threading.Lock()


def _default_pool():
    global _default
    with _lock:
        if _default is None or _default.status != "running":
            _default = Pool()
            atexit.register(_default.close)
        return _default


class Distributed3Backend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's backend for a distributed3 pool: ``pool``, a center's ``address``, or
    (neither) a local cluster shared by the process."""

    supports_retrieve_callback = True
    supports_timeout = True
    default_n_jobs = -1  # every core of the cluster

    def __init__(self, pool=None, address=None, **backend_kwargs):
        super().__init__(**backend_kwargs)
        self._given = pool
        self._address = address
        self._own = None  # a pool this backend made for its address
        self.executor = None

    @property
    def pool(self):
        if self._given is not None:
            return self._given
        if self._address is not None:
            if self._own is None or self._own.status != "running":
                self._own = Pool(self._address)
            return self._own
        return _default_pool()

    def effective_n_jobs(self, n_jobs):
        """The cluster's cores for ``-1`` (``-2``: one fewer, as joblib counts), else
        ``n_jobs``: how many pieces joblib cuts the work into."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        cores = max(sum(self.pool.available_cores.values()), 1)
        if n_jobs is None or n_jobs < 0:
            return max(cores + 1 + (n_jobs if n_jobs is not None else -1), 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, **backend_kwargs):
        self.parallel = parallel
        if self.executor is None:
            self.executor = Executor(pool=self.pool)
        return self.effective_n_jobs(n_jobs)

    def submit(self, func, callback=None):
        future = self.executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out):
        return out.result()

    def abort_everything(self, ensure_ready=True):
        """Cancel the batches still queued (a task failed); those running finish."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = Executor(pool=self.pool) if ensure_ready else None

    def terminate(self):
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None
        if self._own is not None:
            self._own.close()
            self._own = None


joblib.register_parallel_backend("distributed3", Distributed3Backend)
