"""The Pool: sends each task to where its inputs live and keeps results there.

::

    pool --subscribe----------------------------> center   (membership pushed to us)
    pool --compute(key, f, args, who_has)-------> worker holding the inputs
    pool <--{"key", "nbytes"}-------------------- worker   (the value stays there)
    pool --get_data(keys)-----------------------> worker   (only on gather / get)

``Pool`` is a facade: each method builds the call's
:class:`~distributed3.client.options.Options` and hands the work, with the pool's
:class:`~distributed3.client.session.Session`, to the module that does it (tasks,
data, streams, stateful); every blocking method is one line over its coroutine.

>>> from distributed3 import Pool
>>> with Pool(n_workers=2) as pool:
...     A = pool.map(lambda x: x ** 2, range(10))     # results stay on the workers
...     B = pool.map(lambda x: -x, A)                 # each runs where its input is
...     pool.apply(sum, [B]).get()
-285
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

from ..utils import Address, format_address, parse_address
from . import data, graph
from .alone import apply_call
from .info import ClusterInfo
from .options import DEFAULTS, Options
from .session import Session
from .stateful import StatefulPool
from .streams import adrain, drain, stream
from .sync import close_at_exit
from .inbox import submit_now, submit_on_loop
from .tasks import map_call

if TYPE_CHECKING:
    from ..core.security import TLS
    from .executor import Executor
    from .handles import RemoteData
    from .results import RemoteList

T = TypeVar("T")


@runtime_checkable
class ClusterLike(Protocol):
    """What ``Pool(cluster)`` reads of a cluster (:class:`distributed3.deploy.cluster.Cluster`)."""

    center_address: Address
    secret: bytes


class Pool(ClusterInfo):
    """A client of a distributed3 cluster, used like ``multiprocessing.Pool``.

    ``Pool("127.0.0.1:8787")`` connects to a running center, ``Pool(cluster)`` to a
    deployed cluster's (:mod:`distributed3.deploy`; the pool does not stop it); ``Pool()``
    starts an embedded local cluster (a center process and one worker process per
    core, on loopback, with a random secret) and stops it on ``close()``;
    ``memory_limit`` (``"2GB"``, ``"0.25"`` of the machine, ``"auto"``) caps each of its
    workers' results in memory, the least recently used spilling to disk beyond 60 %.

    >>> with Pool(n_workers=2) as local:
    ...     local.available_cores                              # doctest: +ELLIPSIS
    {('127.0.0.1', ...): 1, ('127.0.0.1', ...): 1}

    Every blocking method has an ``a``-prefixed coroutine twin (``amap``,
    ``aapply``, ``agather``, ...) usable from any running event loop.  With
    ``asynchronous=True`` the pool lives on the caller's loop; start it with
    ``await pool`` or ``async with``.  ``pool.session`` is the
    :class:`~distributed3.client.session.Session` behind it.
    """

    def __init__(self, address: str | Address | ClusterLike | None = None, *,
                 secret: str | bytes | None = None, tls: TLS | None = None,
                 n_workers: int | None = None, timeout: float = 10, asynchronous: bool = False,
                 memory_limit: int | float | str | None = None) -> None:  # fmt: skip
        cluster, self._cluster = None, None
        if isinstance(address, ClusterLike):  # a deployed cluster: use it, don't own it
            self._cluster, address = address, address.center_address
            secret, tls = secret or self._cluster.secret, tls or getattr(self._cluster, "tls", None)
        if address is None:
            from ..deploy.local import LocalCluster

            cluster = LocalCluster(n_workers=n_workers, secret=secret, memory_limit=memory_limit)
            secret = cluster.secret
        elif n_workers is not None or memory_limit is not None:
            raise ValueError("n_workers and memory_limit start a local cluster; give no "
                             "address with them")
        else:
            address = parse_address(address, tls=bool(tls))
        self.session = Session(address, secret=secret, tls=tls, timeout=timeout,
                               cluster=cluster, asynchronous=asynchronous)  # fmt: skip
        self.session.worker_wait = getattr(self._cluster, "worker_wait", None)
        if not asynchronous:
            self.session.sync(self.session.start())
            close_at_exit(self.session)

    def __repr__(self):
        s = self.session
        where = format_address(s.center_address) if s.center_address else "not started"
        return f"<Pool center={where} workers={len(s.cores)} status={s.status}>"

    # -- what the session knows, under the pool's names -------------------------

    secret = property(lambda self: self.session.secret)
    tls = property(lambda self: self.session.tls)
    @property
    def timeout(self) -> float:
        """Seconds a call waits for the center or for a worker to join."""
        return self.session.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.session.timeout = seconds

    cluster = property(lambda self: self.session.cluster or self._cluster,
                       doc="The cluster this pool started or was given, if any.")  # fmt: skip
    center_address = property(lambda self: self.session.center_address)
    id = property(lambda self: self.session.id, doc="This client's id at the center.")
    status = property(lambda self: self.session.status)
    asynchronous = property(lambda self: self.session.asynchronous)
    loop = property(lambda self: self.session.loop, doc="The event loop the pool runs on.")
    available_cores = property(lambda self: self.session.cores, doc="``{worker: ncores}``.")
    worker_resources = property(lambda self: self.session.resources,
                                doc="``{worker: {resource: amount}}`` as announced.")  # fmt: skip
    connection_pool = property(lambda self: self.session.connections)

    @property
    def nworkers(self) -> int:
        """How many workers the pool currently sees."""
        return len(self.session.cores)

    @property
    def nhosts(self) -> int:
        """How many distinct hosts the pool's workers run on."""
        return len({host for host, _ in self.session.cores})

    # -- lifecycle ----------------------------------------------------------------

    def __await__(self):
        return self._astart().__await__()

    async def _astart(self):
        if self.session.status == "created":
            await self.session.start()
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await self._astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this pool started one. Idempotent."""
        s = self.session
        if s.status in ("closed", "created") and not s.asynchronous and s.cluster is None:
            s.status = "closed"
            return
        if s.asynchronous:
            raise RuntimeError("this Pool is asynchronous: use `await pool.aclose()`")
        s.sync(s.close())

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        if self.session.loop is None:
            self.session.status = "closed"
            return
        await self.session.run(self.session.close())

    def halt(self) -> None:
        """Stop the cluster this pool started (``Pool()``, ``Pool(n_workers=...)``) and close."""
        if self.session.cluster is None:
            raise RuntimeError(
                f"this pool connects to the cluster at {format_address(self.center_address)}, "
                "which it did not start; stop that with its dcenter/dworker processes"
            )
        self.close()

    # -- membership -----------------------------------------------------------------

    def sync_center(self) -> None:
        """Refresh ``available_cores`` from the center (it is also kept current by events)."""
        return self.session.sync(self._sync_center())

    async def _sync_center(self):
        self.session.cores = await self.session.center("ncores")

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        """Block until the pool sees at least ``n`` workers, or raise ``TimeoutError``.

        >>> pool.wait_for_workers(1)
        """
        return self.session.sync(self.session.wait_for_workers(n, timeout))

    # -- map / apply / submit -------------------------------------------------------

    def map(self, func: Callable[..., T], *iterables: Iterable[Any],
            timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
            chunksize: int | None = DEFAULTS.chunksize, seed: int | None = DEFAULTS.seed,
            progress: bool = DEFAULTS.progress, resources: dict[str, float] | None = DEFAULTS.resources,
            **kwargs: Any) -> RemoteList[T]:  # fmt: skip
        """Apply ``func`` to every item of the iterables, on the workers; a
        :class:`~distributed3.client.results.RemoteList` of ``RemoteData``, in input order.

        Items (and ``kwargs``) may be ``RemoteData``, or lists, tuples and dicts
        holding some: each task runs on the worker that holds its inputs, and
        the worker substitutes their values.  Tasks without remote inputs are
        balanced over the workers by free cores.  Returns when every task has
        finished; the results stay on the workers.

        * ``chunksize=k`` sends ``k`` tasks per message; by default a large map is
          sent in about 8 chunks per core, a small one task by task (and, once the
          function's task time is known, at least 2 ms of work per chunk).  A chunk's
          results stay on its worker under one key, and their handles are made when
          the list is indexed or iterated; a map over such a list goes chunk for chunk;
        * a big keyword argument (a model, a table) reaches each worker once;
        * ``seed=s`` seeds ``random`` and ``numpy.random`` per task from ``(s, index)``,
          so results do not depend on which worker ran what;
        * ``progress=True`` shows a progress bar;
        * ``resources={"GPU": 1}`` runs each task only where that much of the
          workers' announced resources (``dworker --resources``) is free;
        * a task whose worker dies is sent to another, at most ``retries`` times;
          ``timeout`` makes the map raise ``TimeoutError`` naming a task that runs
          longer.  Inputs lost with a worker are recomputed, under the same options.

        >>> squares = pool.map(lambda x: x ** 2, range(4))
        >>> pool.gather(squares)
        [0, 1, 4, 9]
        """
        options = Options(timeout=timeout, retries=retries, chunksize=chunksize, seed=seed,
                          progress=progress, resources=resources)  # fmt: skip
        return self.session.sync(self._map(func, iterables, kwargs, options))

    async def amap(self, func: Callable[..., T], *iterables: Iterable[Any],
                   timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
                   chunksize: int | None = DEFAULTS.chunksize, seed: int | None = DEFAULTS.seed,
                   progress: bool = DEFAULTS.progress,
                   resources: dict[str, float] | None = DEFAULTS.resources,
                   **kwargs: Any) -> RemoteList[T]:  # fmt: skip
        """Async form of :meth:`map`."""
        options = Options(timeout=timeout, retries=retries, chunksize=chunksize, seed=seed,
                          progress=progress, resources=resources)  # fmt: skip
        return await self.session.run(self._map(func, iterables, kwargs, options))

    async def _map(self, func, iterables, kwargs, options):
        return await map_call(self.session, func, iterables, kwargs, options)

    def apply(self, func: Callable[..., T], args: Iterable[Any] | Any = (),
              kwargs: Mapping[str, Any] | None = None, timeout: float | None = DEFAULTS.timeout,
              retries: int = DEFAULTS.retries,
              resources: dict[str, float] | None = DEFAULTS.resources) -> RemoteData[T]:  # fmt: skip
        """Run ``func(*args, **kwargs)`` where most bytes of its remote inputs live.

        ``timeout``, ``retries`` and ``resources`` as for :meth:`map`.

        >>> pool.apply(sum, [pool.scatter([1, 2, 3])]).get()
        6
        """
        options = (DEFAULTS if timeout is None and retries == DEFAULTS.retries and resources is None
                   else Options(timeout=timeout, retries=retries, resources=resources))
        return self.session.sync(apply_call(self.session, func, args, kwargs, options))

    async def aapply(self, func: Callable[..., T], args: Iterable[Any] | Any = (),
                     kwargs: Mapping[str, Any] | None = None,
                     timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
                     resources: dict[str, float] | None = DEFAULTS.resources) -> RemoteData[T]:  # fmt: skip
        """Async form of :meth:`apply`."""
        options = Options(timeout=timeout, retries=retries, resources=resources)
        return await self.session.run(apply_call(self.session, func, args, kwargs, options))

    def submit(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> RemoteData[T]:
        """Start ``func(*args, **kwargs)`` and return its ``RemoteData`` at once.

        Like ``concurrent.futures``: ``done()``, ``result()`` / ``get()``, and
        :func:`distributed3.as_completed` / :func:`distributed3.wait`.  Handles among the
        arguments are inputs: the task runs where they live, once they finished.

        >>> future = pool.submit(pow, 2, 8)
        >>> future.result()
        256
        """
        return submit_now(self.session, func, args, kwargs)

    async def asubmit(self, func: Callable[..., T], *args: Any,
                      **kwargs: Any) -> RemoteData[T]:  # fmt: skip
        """Async form of :meth:`submit`."""
        return await self.session.run(submit_on_loop(self.session, func, args, kwargs))

    # -- streaming --------------------------------------------------------------------

    def imap(self, func: Callable[..., T], *iterables: Iterable[Any],
             chunksize: int | None = DEFAULTS.chunksize, seed: int | None = DEFAULTS.seed,
             progress: bool = DEFAULTS.progress, resources: dict[str, float] | None = DEFAULTS.resources,
             timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
             **kwargs: Any) -> Iterator[T]:  # fmt: skip
        """Like :meth:`map`, but yield the *values*, in order, while later tasks still run.

        The iterables are read as the stream goes, a window of tasks at a time, so an
        endless generator works and memory stays bounded.  Options as for :meth:`map`
        (a seed gives each task the seed it gets in ``map``), except that ``chunksize``
        left unset sends one task per message, as ``multiprocessing``'s ``imap`` does.

        >>> list(pool.imap(lambda x: x + 1, range(3)))
        [1, 2, 3]
        """
        options = Options(timeout=timeout, retries=retries, chunksize=chunksize, seed=seed,
                          progress=progress, resources=resources)  # fmt: skip
        return drain(self.session, self._stream(func, iterables, kwargs, True, options))

    def imap_unordered(self, func: Callable[..., T], *iterables: Iterable[Any],
                       chunksize: int | None = DEFAULTS.chunksize,
                       seed: int | None = DEFAULTS.seed, progress: bool = DEFAULTS.progress,
                       resources: dict[str, float] | None = DEFAULTS.resources,
                       timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
                       **kwargs: Any) -> Iterator[T]:  # fmt: skip
        """Like :meth:`imap`, but yield values in the order tasks finish.

        >>> sorted(pool.imap_unordered(lambda x: x * 2, range(3)))
        [0, 2, 4]
        """
        options = Options(timeout=timeout, retries=retries, chunksize=chunksize, seed=seed,
                          progress=progress, resources=resources)  # fmt: skip
        return drain(self.session, self._stream(func, iterables, kwargs, False, options))

    def aimap(self, func: Callable[..., T], *iterables: Iterable[Any], ordered: bool = True,
              chunksize: int | None = DEFAULTS.chunksize, seed: int | None = DEFAULTS.seed,
              resources: dict[str, float] | None = DEFAULTS.resources,
              timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
              **kwargs: Any) -> AsyncIterator[T]:  # fmt: skip
        """Async iterator form of :meth:`imap` (``ordered=False``: :meth:`imap_unordered`)."""
        options = Options(timeout=timeout, retries=retries, chunksize=chunksize, seed=seed,
                          resources=resources)  # fmt: skip
        return adrain(self.session, self._stream(func, iterables, kwargs, ordered, options))

    def _stream(self, func, iterables, kwargs, ordered, options):
        try:
            total = min(len(it) for it in iterables)
        except TypeError:  # a generator, an endless iterator: read as the stream goes
            total = None
        return stream(self.session, func, zip(*iterables), kwargs, ordered=ordered,
                      options=options, total=total)  # fmt: skip

    # -- data -------------------------------------------------------------------------

    def scatter(self, seq: Iterable[T], broadcast: bool = False) -> list[RemoteData[T]]:
        """Send local values to the workers, spread by cores; list of ``RemoteData``.

        With ``broadcast=True`` every current worker gets a copy of each value.

        >>> data = pool.scatter([1, 2, 3])
        >>> pool.gather(data)
        [1, 2, 3]
        """
        return self.session.sync(data.scatter(self.session, seq, broadcast))

    async def ascatter(self, seq: Iterable[T],
                       broadcast: bool = False) -> list[RemoteData[T]]:  # fmt: skip
        """Async form of :meth:`scatter`."""
        return await self.session.run(data.scatter(self.session, seq, broadcast))

    def gather(self, seq: Any, timeout: float | None = None) -> Any:
        """The values behind a list of ``RemoteData``, one request per worker.

        Lists, tuples and dicts of handles, nested to any depth, come back as the same
        structure of values; non-handle items pass through unchanged.  A handle whose
        task failed re-raises that task's exception.  ``timeout``: seconds to wait at most.

        >>> pool.gather(pool.map(str, [1, 2]))
        ['1', '2']
        """
        return self.session.sync(data.gather(self.session, seq), timeout)

    async def agather(self, seq: Any) -> Any:
        """Async form of :meth:`gather`."""
        return await self.session.run(data.gather(self.session, seq))

    def delete(self, seq: Iterable[RemoteData[Any]]) -> None:
        """Remove the data behind these handles from every worker that holds it.

        >>> pool.delete(pool.scatter([1, 2]))
        """
        return self.session.sync(data.delete(self.session, seq))

    async def adelete(self, seq: Iterable[RemoteData[Any]]) -> None:
        """Async form of :meth:`delete`."""
        return await self.session.run(data.delete(self.session, seq))

    def replicate(self, seq: Iterable[RemoteData[Any]], n: int = 2) -> None:
        """Keep at least ``n`` copies of each handle's data, on different workers.

        >>> data = pool.scatter([1, 2])
        >>> pool.replicate(data, n=2)
        >>> sorted(len(ws) for ws in pool.who_has(data).values())
        [2, 2]
        """
        return self.session.sync(data.replicate(self.session, seq, n))

    async def areplicate(self, seq: Iterable[RemoteData[Any]], n: int = 2) -> None:
        """Async form of :meth:`replicate`."""
        return await self.session.run(data.replicate(self.session, seq, n))

    # -- task graphs (see distributed3.client.graph) ----------------------------------

    def get(self, dsk: Mapping[Any, Any], keys: Any, timeout: float | None = DEFAULTS.timeout,
            retries: int = DEFAULTS.retries, **kwargs: Any) -> Any:  # fmt: skip
        """The values of ``keys`` (a key, or nested lists of them) in the task graph
        ``dsk``: dask's scheduler interface, for ``dask.compute(x, scheduler=pool.get)``
        or ``dask.config.set(scheduler=pool.get)``.  Other keywords dask passes are
        ignored.

        >>> from operator import add
        >>> pool.get({"x": 1, "y": (add, "x", 10)}, "y")
        11
        """
        return self.session.sync(graph.get(self.session, dsk, keys, Options(
            timeout=timeout, retries=retries)))  # fmt: skip

    async def aget(self, dsk: Mapping[Any, Any], keys: Any,
                   timeout: float | None = DEFAULTS.timeout, retries: int = DEFAULTS.retries,
                   **kwargs: Any) -> Any:  # fmt: skip
        """Async form of :meth:`get`."""
        return await self.session.run(graph.get(self.session, dsk, keys, Options(
            timeout=timeout, retries=retries)))  # fmt: skip

    def compute(self, collections: Any, timeout: float | None = DEFAULTS.timeout,
                retries: int = DEFAULTS.retries, optimize_graph: bool = True,
                **kwargs: Any) -> Any:  # fmt: skip
        """A ``RemoteData`` for a dask collection or delayed object (a list for a list),
        its value left on the workers.

        >>> import dask
        >>> pool.compute(dask.delayed(sum)([1, 2, 3])).get()
        6
        """
        return self.session.sync(self.acompute(collections, timeout, retries, optimize_graph))

    async def acompute(self, collections: Any, timeout: float | None = DEFAULTS.timeout,
                       retries: int = DEFAULTS.retries, optimize_graph: bool = True,
                       **kwargs: Any) -> Any:  # fmt: skip
        """Async form of :meth:`compute`."""
        options = Options(timeout=timeout, retries=retries)
        return await self.session.run(graph.compute(self.session, collections, options,
                                                    optimize_graph))  # fmt: skip

    def persist(self, collections: Any, timeout: float | None = DEFAULTS.timeout,
                retries: int = DEFAULTS.retries, optimize_graph: bool = True,
                **kwargs: Any) -> Any:  # fmt: skip
        """The same dask collection (or list of them), computed, its graph now pointing
        at its data on the workers: later computations start from there.  Also what
        ``x.persist(scheduler=pool.get)`` and ``dask.persist`` call.

        >>> import dask.array as da
        >>> x = pool.persist(da.arange(10, chunks=5) * 2)
        >>> int(x.sum().compute(scheduler=pool.get))
        90
        """
        return self.session.sync(self.apersist(collections, timeout, retries, optimize_graph))

    async def apersist(self, collections: Any, timeout: float | None = DEFAULTS.timeout,
                       retries: int = DEFAULTS.retries, optimize_graph: bool = True,
                       **kwargs: Any) -> Any:  # fmt: skip
        """Async form of :meth:`persist`."""
        options = Options(timeout=timeout, retries=retries)
        return await self.session.run(graph.persist(self.session, collections, options,
                                                    optimize_graph))  # fmt: skip

    def executor(self) -> Executor:
        """A ``concurrent.futures.Executor`` on this pool (see
        :class:`~distributed3.client.executor.Executor`); ``shutdown`` leaves the pool open.
        """
        from .executor import Executor

        return Executor(pool=self)

    # -- stateful workers ---------------------------------------------------------------

    def stateful(self, cls: type, *args: Any, **kwargs: Any) -> StatefulPool:
        """Tasks for instances of ``cls`` (a :class:`WorkerInterface`), one per worker.

        ``cls(*args, **kwargs)`` is made once on each worker, before its first task,
        including workers that join later (with every update so far replayed).
        See :mod:`distributed3.client.stateful` for an example.
        """
        return StatefulPool(self.session, cls, args, kwargs)
