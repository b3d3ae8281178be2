"""Stateful workers: a user class made once per worker, then called for each task.

::

    with pool.stateful(Trainer, "data.npz") as sp:   # nothing sent yet
        sp.map(items)            # before a worker's first task: Trainer("data.npz") there,
                                 # plus every update so far, in order; then run(item) per item
        sp.update_workers(lr=0.1)  # handle_update(lr=0.1) on every worker that has one
        sp.imap_unordered(items)   # a worker that joined since gets Trainer(...) + the updates

>>> class Scale(WorkerInterface):
...     def __init__(self, factor):
...         self.factor = factor          # heavy set-up would go here, once per worker
...     def run(self, x):
...         return x * self.factor
...     def handle_update(self, factor):
...         self.factor = factor
>>> from distributed3 import Pool
>>> with Pool(n_workers=2) as pool, pool.stateful(Scale, 10) as sp:
...     first = pool.gather(sp.map(range(4)))
...     sp.update_workers(factor=-1)
...     second = sorted(sp.imap_unordered([{"args": [1]}, {"kwargs": {"x": 2}}]))
>>> first, second
([0, 10, 20, 30], [-2, -1])
"""
import asyncio
import uuid
from collections import defaultdict

from ..core.protocol import dumps_function
from .options import DEFAULTS, Options
from .streams import drain, stream
from .tasks import submit


class WorkerInterface:
    """Base class for state kept on each worker.

    ``__init__(*init_args, **init_kwargs)`` runs once per worker (load a data
    set, a model); ``run(*args, **kwargs)`` runs for each task;
    ``handle_update(*args, **kwargs)`` receives what the client broadcasts with
    ``update_workers`` between tasks; ``close()``, if defined, runs when the
    stateful pool closes.
    """

    def run(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define run(*args, **kwargs)")

    def handle_update(self, *args, **kwargs):
        """Ignore updates unless the subclass says otherwise."""


def _split(item):
    """An item as ``(args, kwargs)``: ``{"args": [...], "kwargs": {...}}`` or a single argument."""
    if isinstance(item, dict) and item and set(item) <= {"args", "kwargs"}:
        return tuple(item.get("args", ())), dict(item.get("kwargs", {}))
    return (item,), {}


class StatefulPool:
    """Tasks for instances of one :class:`WorkerInterface` class, one per worker.

    Made by :meth:`Pool.stateful`; use it as a context manager.  It uses only the
    public methods of the pool's :class:`~distributed3.client.session.Session`.
    """

    def __init__(self, session, cls, args, kwargs):
        self.session = session
        self.cls = cls
        self.name = f"{cls.__name__}-{uuid.uuid4().hex[:8]}"
        self.cls_bytes = dumps_function(cls)
        self.args, self.kwargs = args, kwargs
        self.updates = []
        self.ready = {}  # worker -> (its session.joins then, updates it has applied)
        self._locks = defaultdict(asyncio.Lock)
        self.closed = False

    def __repr__(self):
        if self.closed:
            return f"<StatefulPool {self.name} closed>"
        return f"<StatefulPool {self.name} on {len(self.ready)} workers>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _options(self, **kwargs):
        if self.closed:  # a call now would make every instance again, and leave them
            raise ValueError(f"{self!r} is closed: its instances were dropped")
        stateful = {"name": self.name, "version": len(self.updates)}
        return Options(stateful=stateful, prepare=self._prepare, **kwargs)

    def _stream(self, items, ordered, chunksize):
        options = self._options(chunksize=chunksize)
        arglists = (_split(item) for item in items)
        agen = stream(self.session, self.cls, arglists, {}, ordered=ordered, options=options)
        return drain(self.session, agen)

    async def _prepare(self, worker):
        """Make this worker's instance, or bring it up to date, before it runs a task.
        A worker that joined again since (restarted by its nanny on the same address, or
        seen anew after a center restart) is asked to make it again: one that still has
        it keeps it (see ``Worker.stateful_init``)."""
        joined = self.session.joins.get(worker, 0)
        if self.ready.get(worker) == (joined, len(self.updates)):
            return
        async with self._locks[worker]:
            call = self.session.rpc(worker)
            if self.ready.get(worker, (None,))[0] != joined:
                await call.stateful_init(name=self.name, cls=self.cls_bytes, args=self.args,
                                         kwargs=self.kwargs, updates=list(self.updates))  # fmt: skip
                self.ready[worker] = (joined, len(self.updates))
            while self.ready[worker][1] < len(self.updates):
                version = self.ready[worker][1] + 1
                args, kwargs = self.updates[version - 1]
                await call.stateful_update(name=self.name, args=args, kwargs=kwargs,
                                           version=version)  # fmt: skip
                self.ready[worker] = (joined, version)

    def map(self, items, chunksize=1, timeout=DEFAULTS.timeout, retries=DEFAULTS.retries):
        """``instance.run(item)`` for each item on the workers' instances; a
        :class:`~distributed3.client.results.RemoteList` of ``RemoteData``, as ``Pool.map``.

        An item ``{"args": [...], "kwargs": {...}}`` is called as ``run(*args, **kwargs)``.
        """
        arglists = [_split(item) for item in items]
        options = self._options(chunksize=chunksize, timeout=timeout, retries=retries)
        return self.session.sync(submit(self.session, self.cls, arglists, {}, options=options))

    def imap_unordered(self, items, chunksize=1):
        """Like :meth:`map`, but yield the values as tasks finish."""
        return self._stream(items, False, chunksize)

    def imap(self, items, chunksize=1):
        """Like :meth:`map`, but yield the values in order as they become available."""
        return self._stream(items, True, chunksize)

    def update_workers(self, *args, **kwargs):
        """Call ``handle_update(*args, **kwargs)`` on every instance, now and on later ones."""
        self._options()  # raises once closed
        self.session.sync(self._update(args, kwargs))

    async def _update(self, args, kwargs):
        self.updates.append((args, kwargs))
        live = [w for w in self.ready if w in self.session.cores]
        await asyncio.gather(*[self._prepare(w) for w in live])

    def close(self):
        """Drop the instances (calling their ``close()`` if they define one); a call
        after raises ``ValueError``.  A second close does nothing."""
        if not self.closed:
            self.closed = True
            self.session.sync(self._close())

    async def _close(self):
        workers, self.ready = list(self.ready), {}
        await asyncio.gather(
            *[self.session.rpc(w).stateful_close(name=self.name) for w in workers
              if w in self.session.cores],
            return_exceptions=True,
        )  # fmt: skip
