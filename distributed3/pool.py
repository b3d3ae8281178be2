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

from .client import RemoteData, loop_thread, run_in_loop
from .comm import connect
from .core import ConnectionPool
from .exceptions import (
    CommClosedError,
    ConnectionBrokenError,
    WorkerLostError,
)
from .progress import progress_bar
from .recovery import recover
from .security import TLS, normalize_secret
from .scheduling import split_by_worker, spread
from .stateful import StatefulPool
from .submission import Options, funcname, make_batch, make_tasks
from .utils import format_address, parse_address, wait_for

logger = logging.getLogger(__name__)


def _unwrap(outcome):
    ok, value = outcome
    if ok:
        return value
    value.raise_error()


class Pool:
    """A client of a distributed3 cluster, used like ``multiprocessing.Pool``.

    ``Pool("127.0.0.1:8787")`` connects to a running center; ``Pool()``
    starts an embedded local cluster (a center and one worker process per
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
            from .local import LocalCluster

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
        self._owned = set()  # keys of our live handles, which the center knows we own
        self._to_release = collections.deque()
        self._watcher = None
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
            reply = await asyncio.wait_for(comm.read(), self.timeout)
        except BaseException:
            comm.close()
            raise
        self._subscription = comm
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

    async def _own(self, keys):
        """Tell the center we created ``keys``, so they are released if we vanish."""
        self._owned.update(keys)
        await self._tell_center({"op": "own_keys", "keys": keys, "reply": False})

    async def _tell_center(self, msg):
        """A one-way message on the subscription; lost only if the center is (and then
        resubscribing sends what it must)."""
        comm = self._subscription
        if comm is not None and not comm.closed:
            try:
                await comm.write(msg)
            except (CommClosedError, ConnectionBrokenError):
                pass

    def _release_soon(self, key):
        """Called from ``RemoteData.__del__``, in any thread: release ``key`` shortly."""
        self._to_release.append(key)
        if len(self._to_release) == 1:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._flush_releases()))

    async def _flush_releases(self):
        keys = []
        while self._to_release:
            keys.append(self._to_release.popleft())
        keys = [k for k in keys if k in self._owned]
        if keys and self.status == "running":
            self._owned.difference_update(keys)
            await self._tell_center({"op": "release_keys", "keys": keys, "reply": False})

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

    def map(self, func, *iterables, timeout=None, retries=3, chunksize=1, seed=None,
            progress=False, resources=None, **kwargs):  # fmt: skip
        """Apply ``func`` to every item of the iterables, on the workers; list of ``RemoteData``.

        Items (and ``kwargs``) may be ``RemoteData``, or lists, tuples and dicts
        holding some: each task runs on the worker that holds its inputs, and
        the worker substitutes their values.  Tasks without remote inputs are
        balanced over the workers by free cores.  Returns when every task has
        finished; the results stay on the workers.

        * ``chunksize=k`` sends ``k`` tasks per message (each keeps its own result);
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

    async def amap(self, func, *iterables, timeout=None, retries=3, chunksize=1, seed=None,
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
        return await self._submit(func, list(zip(*iterables)), kwargs, options or Options())

    async def _recover(self, handles):
        """Make the data behind ``handles`` live again (see :func:`recovery.recover`)."""
        await recover(self, handles)

    def _new_key(self, name):
        return f"{name}-{self.id}-{next(self._counter)}"

    async def _submit(self, func, arglists, kwargs, options, wait=True, on_done=None):
        """Make and run the tasks; with ``wait=False`` they run in the background."""
        if self.status != "running":
            raise CommClosedError(f"{self!r} is not running")
        handles, tasks = await make_tasks(self, func, arglists, kwargs, options)
        name = funcname(func) if options.stateful is None else options.stateful["name"]
        bar = progress_bar(len(handles), name) if options.progress else None
        if bar is not None or on_done is not None:
            early = [h for h in handles if h.status != "pending"]  # failed inputs

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
        except BaseException:
            finished = [h for t in tasks for h in t.handles if h.status == "finished"]
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

    # -- streaming --------------------------------------------------------------

    def imap(self, func, *iterables, chunksize=1, seed=None, progress=False, resources=None,
             **kwargs):  # fmt: skip
        """Like :meth:`map`, but yield the *values*, in order, while later tasks still run.

        >>> list(pool.imap(lambda x: x + 1, range(3)))
        [1, 2, 3]
        """
        options = Options(None, 3, chunksize, seed, progress, resources=resources)
        return self._iterate(func, iterables, kwargs, True, options)

    def imap_unordered(self, func, *iterables, chunksize=1, seed=None, progress=False,
                       resources=None, **kwargs):  # fmt: skip
        """Like :meth:`imap`, but yield values in the order tasks finish.

        >>> sorted(pool.imap_unordered(lambda x: x * 2, range(3)))
        [0, 2, 4]
        """
        options = Options(None, 3, chunksize, seed, progress, resources=resources)
        return self._iterate(func, iterables, kwargs, False, options)

    def _iterate(self, func, iterables, kwargs, ordered, options):
        agen = self._stream(func, list(zip(*iterables)), kwargs, ordered, options)
        return self._drain(agen)

    def _drain(self, agen):
        """A blocking generator over an async generator that runs on the pool's loop."""
        try:
            while True:
                try:
                    yield self._sync(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            try:
                self._sync(agen.aclose())
            except Exception:
                pass

    async def aimap(self, func, *iterables, ordered=True, chunksize=1, seed=None, **kwargs):
        """Async iterator form of :meth:`imap` (``ordered=False``: :meth:`imap_unordered`)."""
        options = Options(None, 3, chunksize, seed)
        agen = self._stream(func, list(zip(*iterables)), kwargs, ordered, options)
        while True:
            try:
                yield await self._run(agen.__anext__())
            except StopAsyncIteration:
                return

    async def _stream(self, func, arglists, kwargs, ordered, options):
        queue = asyncio.Queue()
        handles = await self._submit(func, arglists, kwargs, options, wait=False,
                                     on_done=queue.put_nowait)  # fmt: skip
        position = {h.key: i for i, h in enumerate(handles)}
        del handles  # from here on, a yielded value's handle can be collected and released
        ready, next_index, left = {}, 0, len(position)
        while left:
            finished = await queue.get()
            while not queue.empty():
                finished = finished + queue.get_nowait()
            good = {h.key: h for h in finished if h.status == "finished"}
            values = await self._fetch(good) if good else {}
            for h in finished:
                outcome = (True, values[h.key]) if h.key in good else (False, h)
                left -= 1
                if not ordered:
                    yield _unwrap(outcome)
                else:
                    ready[position[h.key]] = outcome
            while next_index in ready:
                yield _unwrap(ready.pop(next_index))
                next_index += 1

    # -- stateful workers --------------------------------------------------------

    def stateful(self, cls, *args, **kwargs):
        """Tasks for instances of ``cls`` (a :class:`WorkerInterface`), one per worker.

        ``cls(*args, **kwargs)`` is made once on each worker, before its first task,
        including workers that join later (with every update so far replayed).
        See :mod:`distributed3.stateful` for an example.
        """
        return StatefulPool(self, cls, args, kwargs)

    # -- data movement --------------------------------------------------------

    def scatter(self, seq, broadcast=False):
        """Send local values to the workers, spread by cores; list of ``RemoteData``.

        With ``broadcast=True`` every current worker gets a copy of each value.

        >>> data = pool.scatter([1, 2, 3])
        >>> pool.gather(data)
        [1, 2, 3]
        """
        return self._sync(self._scatter(seq, broadcast))

    async def ascatter(self, seq, broadcast=False):
        """Async form of :meth:`scatter`."""
        return await self._run(self._scatter(seq, broadcast))

    async def _scatter(self, seq, broadcast=False):
        seq = list(seq)
        if not self.available_cores:
            await self._wait_for_workers(1)
        handles = [RemoteData(self._new_key("data"), self) for _ in seq]
        for handle, value in zip(handles, seq):
            handle.keep_source(value)
        await self._own([h.key for h in handles])
        await self._put(handles, seq, broadcast)
        return handles

    async def _put(self, handles, values, broadcast=False):
        """Store ``values`` under the handles' keys: spread by cores, or on every worker."""
        groups = defaultdict(dict)
        if broadcast:
            for worker in self.available_cores:
                groups[worker] = {h.key: v for h, v in zip(handles, values)}
            for handle in handles:
                handle.workers = set(groups)
        else:
            placement = spread(len(handles), self.available_cores)
            for handle, value, worker in zip(handles, values, placement):
                groups[worker][handle.key] = value
                handle.workers = {worker}
        pool = self.connection_pool
        replies = await asyncio.gather(
            *[pool(w).update_data(data=data) for w, data in groups.items()]
        )
        nbytes = {}
        for reply in replies:
            nbytes.update(reply["nbytes"])
        for handle in handles:
            handle.nbytes = nbytes.get(handle.key)
            handle.status = "finished"

    def gather(self, seq):
        """The values behind a list of ``RemoteData``, one request per worker.

        Non-handle items pass through unchanged.  A handle whose task failed
        re-raises that task's exception.

        >>> pool.gather(pool.map(str, [1, 2]))
        ['1', '2']
        """
        return self._sync(self._gather(seq))

    async def agather(self, seq):
        """Async form of :meth:`gather`."""
        return await self._run(self._gather(seq))

    async def _gather(self, seq):
        seq = list(seq)
        handles = {x.key: x for x in seq if isinstance(x, RemoteData)}
        pending = [h.wait() for h in handles.values() if h.status == "pending"]
        if pending:
            await asyncio.gather(*pending)
        for h in handles.values():
            if h.status == "error":
                h.raise_error()
            if h.status == "deleted":
                raise KeyError(f"{h!r} was deleted")
        values = await self._fetch(handles)
        return [values[x.key] if isinstance(x, RemoteData) else x for x in seq]

    async def _fetch(self, handles):
        """``{key: value}`` for handles, asking the center where any copy went."""
        values = {}
        who_has = {k: set(h.workers) & set(self.available_cores) for k, h in handles.items()}
        for _attempt in range(3):
            unknown = [k for k in handles if k not in values and not who_has.get(k)]
            if unknown:
                found = await self._center("who_has", keys=unknown)
                who_has.update({k: set(v) for k, v in found.items()})
            todo = [k for k in handles if k not in values]
            lost = [k for k in todo if not who_has.get(k)]
            if lost:  # every copy died with its worker: make them again
                await recover(self, [handles[k] for k in lost])
                who_has.update({k: set(handles[k].workers) for k in lost})
            groups = split_by_worker(todo, who_has)
            results = await asyncio.gather(
                *[self.connection_pool(w).get_data(keys=keys) for w, keys in groups.items()],
                return_exceptions=True,
            )
            failed = None
            for (_worker, keys), result in zip(groups.items(), results):
                if isinstance(result, (ConnectionBrokenError, CommClosedError, WorkerLostError)):
                    failed = result
                    for k in keys:
                        who_has[k] = set()
                    continue
                if isinstance(result, BaseException):
                    raise result
                values.update(result)
            if failed is None:
                return values
        raise failed

    def delete(self, seq):
        """Remove the data behind these handles from every worker that holds it.

        >>> pool.delete(pool.scatter([1, 2]))
        """
        return self._sync(self._delete(seq))

    async def adelete(self, seq):
        """Async form of :meth:`delete`."""
        return await self._run(self._delete(seq))

    async def _delete(self, seq):
        handles = [h for h in seq if isinstance(h, RemoteData)]
        keys = [h.key for h in handles]
        who_has = await self._center("who_has", keys=keys)
        by_worker = defaultdict(list)
        for key, workers in who_has.items():
            for w in workers:
                by_worker[w].append(key)
        await asyncio.gather(
            *[self.connection_pool(w).delete_data(keys=ks) for w, ks in by_worker.items()],
            return_exceptions=True,
        )
        for h in handles:
            h.status = "deleted"
            h.workers = set()
        self._owned.difference_update(keys)

    def replicate(self, seq, n=2):
        """Keep at least ``n`` copies of each handle's data, on different workers.

        >>> data = pool.scatter([1, 2])
        >>> pool.replicate(data, n=2)
        >>> sorted(len(ws) for ws in pool.who_has(data).values())
        [2, 2]
        """
        return self._sync(self._replicate(seq, n))

    async def areplicate(self, seq, n=2):
        """Async form of :meth:`replicate`."""
        return await self._run(self._replicate(seq, n))

    async def _replicate(self, seq, n=2):
        handles = {h.key: h for h in seq if isinstance(h, RemoteData) and h.status == "finished"}
        await recover(self, list(handles.values()))  # also refreshes handle.workers
        workers = sorted(self.available_cores, key=lambda w: -self.available_cores[w])
        plan = defaultdict(dict)
        turn = itertools.count()
        for key, handle in handles.items():
            holders = set(handle.workers)
            candidates = [w for w in workers if w not in holders]
            need = max(0, min(n, len(workers)) - len(holders))
            start = next(turn)
            for i in range(need):
                target = candidates[(start + i) % len(candidates)]
                plan[target][key] = list(holders)
        await asyncio.gather(
            *[self.connection_pool(w).fetch_data(who_has=wh) for w, wh in plan.items()]
        )
        for target, wh in plan.items():
            for key in wh:
                handles[key].workers.add(target)

    # -- introspection --------------------------------------------------------

    def who_has(self, seq=None):
        """``{key: {worker address}}`` from the center, for ``seq`` or every key.

        >>> pool.who_has(pool.scatter([1]))                    # doctest: +ELLIPSIS
        {'data-...': {('127.0.0.1', ...)}}
        """
        return self._sync(self._who_has(seq))

    async def awho_has(self, seq=None):
        """Async form of :meth:`who_has`."""
        return await self._run(self._who_has(seq))

    async def _who_has(self, seq=None):
        keys = None if seq is None else [h.key if isinstance(h, RemoteData) else h for h in seq]
        return await self._center("who_has", keys=keys)

    def has_what(self):
        """``{worker address: {key}}`` from the center."""
        return self._sync(self._has_what())

    async def ahas_what(self):
        """Async form of :meth:`has_what`."""
        return await self._run(self._has_what())

    async def _has_what(self):
        return await self._center("has_what")

    def worker_info(self):
        """``{worker: {"ncores", "nkeys", "nbytes", "tasks_done", "peer_bytes_in"}}``.

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
