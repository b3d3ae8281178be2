"""The Pool: sends each task to where its inputs live and keeps results there.

::

    pool --subscribe----------------------------> center   (membership pushed to us)
    pool --compute(key, f, args, who_has)-------> worker holding the inputs
    pool <--{"key", "nbytes"}-------------------- worker   (the value stays there)
    pool --get_data(keys)-----------------------> worker   (only on gather / get)

>>> from distributed3 import Pool
>>> with Pool(n_workers=2) as pool:
...     A = pool.map(lambda x: x ** 2, range(10))     # results stay on the workers
...     B = pool.map(lambda x: -x, A)                 # each runs where its input is
...     pool.apply(sum, [B]).get()
-285
"""
import asyncio
import collections
import itertools
import logging
import uuid
from collections import defaultdict

from .handles import RemoteData
from .results import RemoteList, ResultGroup
from .sync import loop_thread, run_in_loop
from ..core.comm import connect
from ..core.server import ConnectionPool
from ..exceptions import (
    CommClosedError,
    ConnectionBrokenError,
    DistributedError,
)
from .progress import progress_bar
from .recovery import recover
from ..core.security import TLS, normalize_secret
from .data import DataMixin
from .streams import StreamingMixin
from .stateful import StatefulPool
from .tasks import Options, TaskTimes, funcname, make_batch, make_tasks, mapped_over
from ..utils import format_address, gc_paused, parse_address, wait_for

logger = logging.getLogger(__name__)


class Pool(StreamingMixin, DataMixin):
    """A client of a distributed3 cluster, used like ``multiprocessing.Pool``.

    ``Pool("127.0.0.1:8787")`` connects to a running center; ``Pool()``
    starts an embedded local cluster (a center process and one worker process per
    core, on loopback, with a random secret) and stops it on ``close()``.

    >>> with Pool(n_workers=2) as local:
    ...     local.available_cores                              # doctest: +ELLIPSIS
    {('127.0.0.1', ...): 1, ('127.0.0.1', ...): 1}

    Every blocking method has an ``a``-prefixed coroutine twin (``amap``,
    ``aapply``, ``agather``, ...) usable from any running event loop.  With
    ``asynchronous=True`` the pool lives on the caller's loop; start it with
    ``await pool`` or ``async with``.
    """

    def __init__(self, address=None, *, secret=None, tls=None, n_workers=None, timeout=10,
                 asynchronous=False):  # fmt: skip
        self.secret = normalize_secret(secret)
        self.tls = TLS.coerce(tls)
        self.timeout = timeout
        self.cluster = None
        if address is None:
            from ..deploy.local import LocalCluster

            self.cluster = LocalCluster(n_workers=n_workers, secret=self.secret)
            self.secret = self.cluster.secret
            self.center_address = None
        else:
            if n_workers is not None:
                raise ValueError("n_workers starts a local cluster; give no address with it")
            self.center_address = parse_address(address)
        self.available_cores = {}
        self.worker_resources = {}  # worker -> {"GPU": 2, ...} as announced
        self.resources_in_use = defaultdict(lambda: defaultdict(float))
        self.occupancy = defaultdict(int)
        self.id = uuid.uuid4().hex[:8]
        self._counter = itertools.count()
        self._batches = set()
        self._subscription = None
        self._task_times = TaskTimes()  # seconds per task of the functions mapped, for chunks
        self._owned = set()  # keys of our live handles, which the center knows we own
        self._to_release = collections.deque()
        self._release_due = False  # a flush of _to_release is scheduled
        self._unsent_releases = []  # released while the center was away: sent on resubscribe
        self._notes = {"own": [], "release": []}  # for the center, sent together
        self._watcher = None
        self._broken = None  # why every call fails: the local cluster is gone
        self.connection_pool = None
        self.status = "created"
        self.asynchronous = asynchronous
        if asynchronous:
            self.loop = None
        else:
            self._loop_thread = loop_thread()
            self.loop = self._loop_thread.loop
            self._sync(self._start())

    def __repr__(self):
        where = format_address(self.center_address) if self.center_address else "not started"
        return f"<Pool center={where} workers={len(self.available_cores)} status={self.status}>"

    # -- sync / async plumbing ------------------------------------------------

    def _sync(self, coro, timeout=None):
        if self.asynchronous:
            coro.close()
            raise RuntimeError("this Pool is asynchronous: use the a* methods with await")
        return self._loop_thread.run_sync(coro, timeout)

    async def _run(self, coro):
        if self.loop is None:
            coro.close()
            raise RuntimeError("start the Pool first: `await pool` or `async with pool`")
        return await run_in_loop(coro, self.loop)

    def __await__(self):
        return self._astart().__await__()

    async def _astart(self):
        if self.status == "created":
            self.loop = asyncio.get_running_loop()
            await self._start()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        return await self._astart()

    async def __aexit__(self, *exc):
        await self.aclose()

    # -- lifecycle ------------------------------------------------------------

    async def _start(self):
        self.status = "starting"
        try:
            if self.cluster is not None:
                await self.cluster.start()
                self.center_address = self.cluster.center_address
            self.connection_pool = ConnectionPool(
                secret=self.secret, timeout=self.timeout, tls=self.tls
            )
            comm = await self._subscribe()
        except BaseException:
            await self._close()
            raise
        self._watcher = asyncio.ensure_future(self._watch_membership(comm))
        self.status = "running"
        logger.info("Pool connected to center %s with %d workers",
                    format_address(self.center_address), len(self.available_cores))  # fmt: skip

    async def _subscribe(self):
        """Connect to the center for membership events; sets ``available_cores``."""
        comm = await connect(self.center_address, self.secret, self.timeout, tls=self.tls)
        try:
            await comm.write({"op": "subscribe", "client": self.id, "keys": list(self._owned)})
            async with asyncio.timeout(self.timeout):  # loses no cancellation (see comm)
                reply = await comm.read()
        except BaseException:
            comm.close()
            raise
        self._subscription = comm
        if self._unsent_releases:  # dropped while the center was away
            keys, self._unsent_releases = self._unsent_releases, []
            self._note_release(keys)
        self.available_cores = dict(reply["result"]["workers"])
        self.worker_resources = dict(reply["result"].get("resources", {}))
        for batch in list(self._batches):
            for worker in self.available_cores:
                batch.add_worker(worker)
        return comm

    async def _watch_membership(self, comm):
        """Apply the center's pushed events; reconnect, with backoff, if the center is lost."""
        while True:
            try:
                event = await comm.read()
            except (CommClosedError, ConnectionBrokenError) as e:
                if self.status != "running":
                    return
                logger.warning("Lost the center %s: %s", format_address(self.center_address), e)
                if await self._local_center_died():
                    return
                comm = await self._resubscribe()
                continue
            op = event.get("op")
            address = event.get("address")
            if op == "add_worker":
                self.worker_resources[address] = event.get("resources", {})
                self.available_cores[address] = event["ncores"]
                for batch in list(self._batches):
                    batch.add_worker(address)
            elif op == "remove_worker":
                self.available_cores.pop(address, None)

    async def _local_center_died(self):
        """Whether the center this pool started has ended; if so, later calls say so."""
        if self.cluster is None:
            return False
        code = await self.cluster.center_exit_code(timeout=1.0)
        if code is None:
            return False
        self._broken = DistributedError(
            f"the local cluster's center process exited with code {code}, and its workers "
            "with it; start a new Pool"
        )
        logger.error("%s", self._broken)
        return True

    async def _resubscribe(self):
        delay = 0.05
        while self.status == "running":
            try:
                comm = await self._subscribe()
                logger.info("Reconnected to center %s", format_address(self.center_address))
                return comm
            except (ConnectionBrokenError, OSError, TimeoutError) as e:
                logger.debug("Center still unreachable: %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _resources_freed(self):
        """An event set whenever a task gives resources back (cleared by each waiter)."""
        event = getattr(self, "_freed_event", None)
        if event is None:
            event = self._freed_event = asyncio.Event()
        else:
            event.clear()
        return event

    async def _center(self, op, **kwargs):
        """Call the center, retrying while it restarts, for up to ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        delay = 0.05
        while True:
            try:
                return await self.connection_pool.call(self.center_address, {"op": op, **kwargs})
            except ConnectionBrokenError as e:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise ConnectionBrokenError(
                        f"center {format_address(self.center_address)} unreachable for "
                        f"{self.timeout} s: {e}"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self):
        """Disconnect, and stop the local cluster if this pool started one. Idempotent."""
        if self.status in ("closed", "created") and not self.asynchronous and self.cluster is None:
            self.status = "closed"
            return
        if self.asynchronous:
            raise RuntimeError("this Pool is asynchronous: use `await pool.aclose()`")
        self._sync(self._close())

    async def aclose(self):
        """Async form of :meth:`close`."""
        if self.loop is None:
            self.status = "closed"
            return
        await self._run(self._close())

    async def _close(self):
        if self.status == "closed":
            return
        self._notes = {"own": [], "release": []}  # superseded: we release all now
        if self.status == "running" and self._owned:
            keys, self._owned = list(self._owned), set()
            await self._tell_center({"op": "release_keys", "keys": keys, "reply": False})
        self.status = "closing"
        if self._watcher is not None:
            self._watcher.cancel()
        if self._subscription is not None:
            self._subscription.close()
        if self.connection_pool is not None:
            await self.connection_pool.close()
        if self.cluster is not None:
            await self.cluster.close()
        self.status = "closed"

    def __del__(self):
        if getattr(self, "status", "closed") == "running" and getattr(self, "cluster", None):
            try:
                self.cluster.kill()
            except Exception:
                pass

    # -- membership -----------------------------------------------------------

    @property
    def nhosts(self):
        """How many distinct hosts the pool's workers run on."""
        return len({host for host, _ in self.available_cores})

    def halt(self):
        """Stop the cluster this pool started (``Pool()``, ``Pool(n_workers=...)``) and close."""
        if self.cluster is None:
            raise RuntimeError(
                f"this pool connects to the cluster at {format_address(self.center_address)}, "
                "which it did not start; stop that with its dcenter/dworker processes"
            )
        self.close()

    @property
    def nworkers(self):
        """How many workers the pool currently sees."""
        return len(self.available_cores)

    def sync_center(self):
        """Refresh ``available_cores`` from the center (it is also kept current by events)."""
        return self._sync(self._sync_center())

    async def _sync_center(self):
        self.available_cores = await self._center("ncores")

    def wait_for_workers(self, n, timeout=None):
        """Block until the pool sees at least ``n`` workers, or raise ``TimeoutError``."""
        return self._sync(self._wait_for_workers(n, timeout))

    async def _wait_for_workers(self, n, timeout=None):
        await wait_for(lambda: len(self.available_cores) >= n, timeout or self.timeout,
                       f"pool saw fewer than {n} workers")  # fmt: skip

    # -- map / apply / submit -------------------------------------------------

    def map(self, func, *iterables, timeout=None, retries=3, chunksize=None, seed=None,
            progress=False, resources=None, **kwargs):  # fmt: skip
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
          longer.  Inputs lost with a worker are recomputed.

        >>> squares = pool.map(lambda x: x ** 2, range(4))
        >>> pool.gather(squares)
        [0, 1, 4, 9]
        """
        options = Options(timeout, retries, chunksize, seed, progress, resources=resources)
        return self._sync(self._map(func, *iterables, options=options, **kwargs))

    async def amap(self, func, *iterables, timeout=None, retries=3, chunksize=None, seed=None,
                   progress=False, resources=None, **kwargs):  # fmt: skip
        """Async form of :meth:`map`."""
        options = Options(timeout, retries, chunksize, seed, progress, resources=resources)
        return await self._run(self._map(func, *iterables, options=options, **kwargs))

    def apply(self, func, args=(), kwargs=None, timeout=None, retries=3):
        """Run ``func(*args, **kwargs)`` where most bytes of its remote inputs live.

        ``timeout`` and ``retries`` as for :meth:`map`.

        >>> pool.apply(sum, [pool.scatter([1, 2, 3])]).get()
        6
        """
        return self._sync(self._apply(func, args, kwargs, Options(timeout, retries)))

    async def aapply(self, func, args=(), kwargs=None, timeout=None, retries=3):
        """Async form of :meth:`apply`."""
        return await self._run(self._apply(func, args, kwargs, Options(timeout, retries)))

    def submit(self, func, *args, **kwargs):
        """Start ``func(*args, **kwargs)`` and return its ``RemoteData`` at once.

        Like ``concurrent.futures``: ``done()``, ``result()`` / ``get()``, and
        :func:`distributed3.as_completed` / :func:`distributed3.wait`.

        >>> future = pool.submit(pow, 2, 8)
        >>> future.result()
        256
        """
        return self._sync(self._submit(func, [args], kwargs, Options(), wait=False))[0]

    async def asubmit(self, func, *args, **kwargs):
        """Async form of :meth:`submit`."""
        return (await self._run(self._submit(func, [args], kwargs, Options(), wait=False)))[0]

    async def _apply(self, func, args=(), kwargs=None, options=None):
        if not isinstance(args, (tuple, list)):
            args = (args,)
        (handle,) = await self._submit(func, [tuple(args)], kwargs or {}, options or Options())
        return handle

    async def _map(self, func, *iterables, options=None, **kwargs):
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        over = mapped_over(iterables)  # a map over a map's results goes chunk for chunk
        arglists = None
        single = len(iterables) == 1  # f(x) for x in one sequence: no tuple per element
        if over is None:
            # the handles of a RemoteList passed in are made here, none of them garbage
            lazy = sum(len(it) for it in iterables if isinstance(it, RemoteList))
            with gc_paused(lazy):
                arglists = list(iterables[0]) if single else list(zip(*iterables))
        handles = await self._submit(func, arglists, kwargs, options or Options(), grouped=True,
                                     over=over, single=single)  # fmt: skip
        return handles if isinstance(handles, RemoteList) else RemoteList(handles)

    async def _recover(self, handles):
        """Make the data behind ``handles`` live again (see :func:`recovery.recover`)."""
        await recover(self, handles)

    def _new_key(self, name):
        return f"{name}-{self.id}-{next(self._counter)}"

    async def _submit(self, func, arglists, kwargs, options, wait=True, on_done=None,
                      grouped=False, over=None, single=False):  # fmt: skip
        """Make and run the tasks; with ``wait=False`` they run in the background.

        ``grouped``: chunks may keep their results as one key each, and the handles
        come as a lazy :class:`RemoteList`; ``single``: each of ``arglists`` is a
        task's one argument (see :func:`submission.make_tasks`).
        """
        if self.status != "running":
            raise CommClosedError(f"{self!r} is not running")
        if self._broken is not None:
            raise self._broken
        grouped = grouped and wait and on_done is None  # the others need every handle
        handles, tasks = await make_tasks(self, func, arglists, kwargs, options, grouped, over,
                                          single)  # fmt: skip
        name = funcname(func) if options.stateful is None else options.stateful["name"]
        bar = progress_bar(len(handles), name) if options.progress else None
        if bar is not None or on_done is not None:
            # failed inputs (a RemoteList's elements have no inputs of their own)
            early = [] if isinstance(handles, RemoteList) else [
                h for h in handles if h.status != "pending"]  # fmt: skip

            def done(finished):
                if bar is not None:
                    bar.update(len(finished))
                if on_done is not None:
                    on_done(finished)

            if early:
                done(early)
        else:
            done = None
        batch = make_batch(self, tasks, name, options, done)
        if not wait:
            asyncio.ensure_future(self._in_background(batch, handles, bar))
            return handles
        try:
            if tasks:
                await batch.run()
            if isinstance(handles, RemoteList):
                self._task_times.learn(handles)
        except BaseException:
            finished = [h for t in tasks for h in t.finished()]
            if finished and self.status == "running":
                await self._delete(finished)
            raise
        finally:
            if bar is not None:
                bar.close()
        return handles

    async def _in_background(self, batch, handles, bar):
        try:
            if batch.remaining:
                await batch.run()
        except Exception as e:  # the error belongs to the handles nobody awaits here
            for handle in handles:
                if handle.status == "pending":
                    handle.set_error(e, "")
        finally:
            if bar is not None:
                bar.close()

    # -- stateful workers --------------------------------------------------------

    def stateful(self, cls, *args, **kwargs):
        """Tasks for instances of ``cls`` (a :class:`WorkerInterface`), one per worker.

        ``cls(*args, **kwargs)`` is made once on each worker, before its first task,
        including workers that join later (with every update so far replayed).
        See :mod:`distributed3.client.stateful` for an example.
        """
        return StatefulPool(self, cls, args, kwargs)

    # -- introspection --------------------------------------------------------

    def who_has(self, seq=None):
        """``{key: {worker address}}`` from the center, for ``seq`` or every key.

        For handles in ``seq`` it also counts the worker their task ran on, which
        the center may learn some tens of milliseconds after the task's reply.

        >>> pool.who_has(pool.scatter([1]))                    # doctest: +ELLIPSIS
        {'data-...': {('127.0.0.1', ...)}}
        """
        return self._sync(self._who_has(seq))

    async def awho_has(self, seq=None):
        """Async form of :meth:`who_has`."""
        return await self._run(self._who_has(seq))

    async def _who_has(self, seq=None, parts=False):
        seq = None if seq is None else list(seq)
        held = (RemoteData, ResultGroup)  # handles, or a map's chunks
        keys = None if seq is None else [h.key if isinstance(h, held) else h for h in seq]
        who_has = await self._center("who_has", keys=keys, parts=parts)
        for h in seq or ():
            if not isinstance(h, held):
                continue
            if h.status == "finished":  # where a task just ran, if its report is on its way
                who_has[h.key] = set(who_has.get(h.key, ())) | (h.workers & set(self.available_cores))
            elif h.status in ("error", "deleted"):  # held by nobody, though its chunk is
                who_has[h.key] = set()
        return who_has

    def has_what(self):
        """``{worker address: {key}}`` from the center."""
        return self._sync(self._has_what())

    async def ahas_what(self):
        """Async form of :meth:`has_what`."""
        return await self._run(self._has_what())

    async def _has_what(self):
        return await self._center("has_what")

    def worker_info(self):
        """``{worker: {"ncores", "nkeys", "nbytes", "tasks_done", "peer_bytes_in", "pid"}}``.

        ``peer_bytes_in`` counts the input bytes a worker fetched from its peers,
        which is how locality is checked: it stays 0 when tasks ran where their
        inputs were.
        """
        return self._sync(self._worker_info())

    async def aworker_info(self):
        """Async form of :meth:`worker_info`."""
        return await self._run(self._worker_info())

    async def _worker_info(self):
        workers = list(self.available_cores)
        infos = await asyncio.gather(*[self.connection_pool(w).info() for w in workers])
        return dict(zip(workers, infos))
