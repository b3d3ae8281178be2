"""The client's view of the cluster, shared by everything that puts work on it.

::

    Session --subscribe(client id, keys owned)--> center
            <--add_worker / remove_worker-------- center    (cores, resources)
            --ownership(own, release), batched--> center    (keys made, keys dropped)
            --who_has / has_what / ncores-------> center    (retried while it restarts)
    lost the center: subscribe again, with backoff, re-owning every live key

A :class:`Session` holds the center link and its resubscription, membership
(``cores``, ``resources``) and occupancy, the resources reserved by running tasks,
the keys this client owns and the releases on their way, the task times learned,
and the event loop that the blocking calls run.  Batches, task making, recovery,
handles and streams are handed the session and use only its public methods; the
``Pool`` is a facade over it.

>>> session = Session(("127.0.0.1", 8787))
>>> session.new_key("inc") == f"inc-{session.id}-0", session.status
(True, 'created')
"""
import asyncio
import collections
import itertools
import logging
import uuid
from collections import defaultdict

from ..core.comm import connect
from ..core.security import TLS, normalize_secret
from ..core.channel import Channels
from ..core.server import ConnectionPool, request, rpc
from ..exceptions import (CommClosedError, ConnectionBrokenError, DistributedError,
                          VersionMismatchError)
from ..scheduling import TaskTimes
from ..utils import Backoff, format_address, wait_for
from ..versions import compare, versions
from . import data, recovery
from .backlog import report_backlog
from .resources import Resources
from .sync import loop_thread, run_in_loop

logger = logging.getLogger(__name__)

NOTE_DELAY = 0.01  # seconds ownership notes wait to go out together
REMOVED_GRACE = 0.5  # seconds before the tasks of a worker the center dropped go elsewhere
DEATHS_KEPT = 1000  # causes of worker deaths remembered (from the workers' nannies)


class Session(Resources):
    """The center link, membership, occupancy, resources and keys of one client.

    ``cores`` (``{worker: ncores}``) and ``resources`` (``{worker: {"GPU": 2}}``) follow
    the center's events; ``occupancy`` counts this client's tasks in flight per
    worker.  ``cluster`` is the :class:`~distributed3.deploy.local.LocalCluster` the
    session starts first, if any.  Blocking callers use :meth:`sync`, coroutines on
    another loop :meth:`run`.

    >>> session = pool.session
    >>> session.cores == pool.available_cores, session.status
    (True, 'running')
    >>> session.sync(session.center("ncores")) == session.cores
    True
    """

    def __init__(self, center_address, *, secret=None, tls=None, timeout=10, cluster=None,
                 asynchronous=False):  # fmt: skip
        self.center_address = center_address
        self.secret = normalize_secret(secret)
        self.tls = TLS.coerce(tls)
        self.timeout = timeout
        self.worker_wait = None  # seconds work waits for a worker to join (None: timeout)
        self.cluster = cluster
        self.id = uuid.uuid4().hex[:8]
        self.cores = {}
        self.resources = {}
        self.versions = {}  # "client", "center", "workers": what each runs
        self.refused = set()  # workers whose Python cannot run our code
        self._warned = set()
        self.occupancy = defaultdict(int)
        self.task_times = TaskTimes()  # seconds per task of the functions mapped, for chunks
        self.submits = None  # the Feed that submitted tasks join (see inbox.submits)
        self.inbox = None  # where submits wait for the loop (see inbox.inbox)
        self.connections = None  # a ConnectionPool, once started
        self.channels = None  # one Channel per worker for tasks, once started
        self.status = "created"
        self.broken = None  # why every call fails: the local cluster is gone
        self.asynchronous = asynchronous
        self._loop_thread = None if asynchronous else loop_thread()
        self.loop = None if asynchronous else self._loop_thread.loop
        self._counter = itertools.count()
        self._listeners = set()  # told of each worker that joins (running batches)
        self.joins = {}  # worker -> how often it joined again: a new process, maybe
        self._init_resources()
        self._subscription = None
        self._watcher = None
        self._reporter = None  # tells the center our backlog (for adaptive clusters)
        self._owned = set()  # keys of our live handles, which the center knows we own
        self._to_release = collections.deque()
        self._release_due = False  # a flush of _to_release is scheduled
        self._unsent_releases = []  # released while the center was away: sent on resubscribe
        self._notes = {"own": [], "release": []}  # for the center, sent together
        self.death_causes = collections.OrderedDict()  # worker -> why it died, by its nanny
        self._cause_waiters = defaultdict(list)

    def __repr__(self):
        where = format_address(self.center_address) if self.center_address else "not started"
        return f"<Session {self.id} center={where} workers={len(self.cores)} {self.status}>"

    # -- running coroutines ---------------------------------------------------

    def sync(self, coro, timeout=None):
        """Run ``coro`` on the session's loop and return its result, blocking."""
        try:
            loop_thread = self.loop_thread
        except RuntimeError:
            coro.close()
            raise
        return loop_thread.run_sync(coro, timeout)

    @property
    def loop_thread(self):
        """The :class:`~distributed3.client.sync.LoopThread` of a blocking session."""
        if self.asynchronous:
            raise RuntimeError("this Pool is asynchronous: use the a* methods with await")
        return self._loop_thread

    async def run(self, coro):
        """Await ``coro`` on the session's loop, from a coroutine on any loop."""
        if self.loop is None:
            coro.close()
            raise RuntimeError("start the Pool first: `await pool` or `async with pool`")
        return await run_in_loop(coro, self.loop)

    def check(self):
        """Raise why no call can run now: the session is not running, or its cluster died."""
        if self.status != "running":
            raise CommClosedError(f"{self!r} is not running")
        if self.broken is not None:
            raise self.broken

    # -- lifecycle ------------------------------------------------------------

    async def start(self):
        """Start the local cluster, if any, and subscribe to the center."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.status = "starting"
        try:
            if self.cluster is not None:
                await self.cluster.start()
                self.center_address = self.cluster.center_address
            self.connections = ConnectionPool(secret=self.secret, timeout=self.timeout,
                                              tls=self.tls)  # fmt: skip
            self.channels = Channels(secret=self.secret, timeout=self.timeout, tls=self.tls)
            comm = await self._subscribe()
        except BaseException:
            await self.close()
            raise
        self._watcher = asyncio.ensure_future(self._watch_membership(comm))
        self._reporter = asyncio.ensure_future(report_backlog(self))
        self.status = "running"
        logger.info("Pool connected to center %s with %d workers",
                    format_address(self.center_address), len(self.cores))  # fmt: skip

    async def close(self):
        """Release every key we own, disconnect, stop the local cluster. Idempotent."""
        if self.status == "closed":
            return
        self._notes = {"own": [], "release": []}  # superseded: we release all now
        if self.status == "running" and self._owned:
            keys, self._owned = list(self._owned), set()
            await self.tell_center({"op": "release_keys", "keys": keys, "reply": False})
        self.status = "closing"
        self._fail_pending()
        for task in (self._watcher, self._reporter):
            if task is not None:
                task.cancel()
        if self._subscription is not None:
            self._subscription.close()
        if self.connections is not None:
            await self.connections.close()
        if self.channels is not None:
            self.channels.close()
        if self.cluster is not None:
            await self.cluster.close()
        self.status = "closed"

    def _fail_pending(self):
        """Submits and calls not finished at close fail, saying so, rather than wait for
        good (a pool closed from another thread, or by ``aclose`` during ``amap``)."""
        error = CommClosedError(f"{self!r} closed before the task ended")
        if self.submits is not None:
            self.submits.close(error)
        if self.inbox is not None:
            self.inbox.drain()  # what is queued fails: the session no longer runs
        for listener in list(self._listeners):  # running batches: map, apply, imap, get
            listener.fail(CommClosedError(f"{self!r} closed before the call ended"))

    def __del__(self):
        # not the Pool's: its handles and streams hold the session, not the facade
        if getattr(self, "status", "closed") == "running" and getattr(self, "cluster", None):
            try:
                self.cluster.kill()
            except Exception:
                pass

    def disconnect(self):
        """Drop the center link, without a word to the center and without reconnecting,
        as a client that dies would (for tests of what the cluster does then)."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._subscription is not None:
            self._subscription.close()

    def center_link_down(self):
        """Whether the subscription to the center is down now."""
        return self._subscription is None or self._subscription.closed

    def unsent_releases(self):
        """How many releases wait for the center to come back."""
        return len(self._unsent_releases)

    # -- the center -----------------------------------------------------------

    async def center(self, op, **kwargs):
        """Call the center, retrying while it restarts, for up to ``timeout`` seconds."""
        if self.status in ("closing", "closed"):  # its connections are gone: say why
            raise CommClosedError(f"{self!r} is not running")
        backoff = Backoff(first=0.05, most=1.0, deadline=self.timeout)
        while True:
            try:
                return await self.connections.call(self.center_address, {"op": op, **kwargs})
            except ConnectionBrokenError as e:
                if not await backoff.wait():
                    raise ConnectionBrokenError(
                        f"center {format_address(self.center_address)} unreachable for "
                        f"{self.timeout} s: {e}"
                    ) from None

    async def tell_center(self, msg):
        """Send a one-way message on the subscription; whether it went (it does not
        while the center is away: then subscribing again sends what it must)."""
        comm = self._subscription
        if comm is not None and not comm.closed:
            try:
                await comm.write(msg)
                return True
            except (CommClosedError, ConnectionBrokenError):
                pass
        return False

    async def _subscribe(self):
        """Connect to the center for membership events; sets ``cores``."""
        comm = await connect(self.center_address, self.secret, self.timeout, tls=self.tls)
        try:
            msg = {"op": "subscribe", "client": self.id, "keys": list(self._owned)}
            result = await request(comm, msg, self.timeout)
        except BaseException:
            comm.close()
            raise
        self._subscription = comm
        if self._unsent_releases:  # dropped while the center was away
            keys, self._unsent_releases = self._unsent_releases, []
            self._note_release(keys)
        self.versions = {"client": versions(), "center": result.get("center_versions"),
                         "workers": {}}  # fmt: skip
        errors = self._check_versions("the center", result.get("center_versions"))
        workers = dict(result["workers"])
        for worker, theirs in result.get("versions", {}).items():
            errors += self._check_versions(worker, theirs)
        if errors and self.status != "running":  # at start: refuse; later, leave them out
            comm.close()
            raise VersionMismatchError("; ".join(errors))
        self.cores = {w: n for w, n in workers.items() if w not in self.refused}
        self.resources = dict(result.get("resources", {}))
        for worker in self.cores:
            self._joined(worker)
        return comm

    def _check_versions(self, peer, theirs):
        """The errors ``peer``'s versions make (it is refused: left out of ``cores``);
        the warnings are logged once per peer."""
        name = peer if isinstance(peer, str) else f"worker {format_address(peer)}"
        errors, warns = compare(self.versions["client"], theirs, name)
        if not isinstance(peer, str):
            self.versions["workers"][peer] = theirs
            if errors:
                self.refused.add(peer)
                logger.error("Not using %s: %s", name, errors[0])
        for warning in warns:
            if warning not in self._warned:
                self._warned.add(warning)
                logger.warning("%s", warning)
        return errors

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
            address = event.get("address")
            if event.get("op") == "add_worker":
                if self._check_versions(address, event.get("versions")):
                    continue
                self.resources[address] = event.get("resources", {})
                self.cores[address] = event["ncores"]
                self._joined(address)
            elif event.get("op") == "remove_worker":
                self.cores.pop(address, None)
                self._drop_later(address)
            elif event.get("op") == "worker_died":
                self._note_death(address, event["cause"])

    def _note_death(self, worker, cause):
        self.death_causes[worker] = cause
        while len(self.death_causes) > DEATHS_KEPT:
            self.death_causes.popitem(last=False)
        for waiter in self._cause_waiters.pop(worker, ()):
            if not waiter.done():
                waiter.set_result(cause)

    async def death_cause(self, worker, timeout):
        """Why ``worker`` died, as its nanny told the center, waiting up to ``timeout``
        seconds for word of it (which comes just after its connections break); None if
        no word came (it had no nanny, or it is alive)."""
        if worker in self.death_causes:
            return self.death_causes[worker]
        waiter = asyncio.get_running_loop().create_future()
        self._cause_waiters[worker].append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            waiters = self._cause_waiters.get(worker)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._cause_waiters[worker]

    def _drop_later(self, worker):
        """The center dropped ``worker``: unless it is back within ``REMOVED_GRACE``
        seconds (its last replies may still be on their way), the tasks it still has
        from us fail over to other workers, as if its connection had broken -- a frozen
        worker must not hold a map until it wakes."""

        def drop():
            if worker not in self.cores and self.channels is not None:
                self.channels.drop(worker, "was dropped by the center (no heartbeat, or "
                                           "it left)")  # fmt: skip

        self.loop.call_later(REMOVED_GRACE, drop)

    async def _local_center_died(self):
        """Whether the center this session started has ended; if so, later calls say so."""
        if self.cluster is None:
            return False
        code = await self.cluster.center_exit_code(timeout=1.0)
        if code is None:
            return False
        self.broken = DistributedError(
            f"the local cluster's center process exited with code {code}, and its workers "
            "with it; start a new Pool"
        )
        logger.error("%s", self.broken)
        return True

    async def _resubscribe(self):
        backoff = Backoff(first=0.05, most=1.0)
        while self.status == "running":
            try:
                comm = await self._subscribe()
                logger.info("Reconnected to center %s", format_address(self.center_address))
                return comm
            except (ConnectionBrokenError, OSError, TimeoutError) as e:
                logger.debug("Center still unreachable: %s", e)
                await backoff.wait()

    # -- membership -----------------------------------------------------------

    def listen(self, listener):
        """Call ``listener.add_worker(worker)`` for each worker that joins, until
        :meth:`unlisten`."""
        self._listeners.add(listener)

    def unlisten(self, listener):
        self._listeners.discard(listener)

    def _joined(self, worker):
        self.joins[worker] = self.joins.get(worker, 0) + 1
        for listener in list(self._listeners):
            listener.add_worker(worker)

    async def wait_for_workers(self, n, timeout=None):
        """Wait until at least ``n`` workers are known (``worker_wait`` s), or raise."""
        await wait_for(lambda: len(self.cores) >= n, timeout or self.worker_wait or self.timeout,
                       f"pool saw fewer than {n} workers")  # fmt: skip

    def unfinished(self):
        """Tasks of the running batches not finished yet (queued here or on workers)."""
        return sum(getattr(listener, "remaining", 0) for listener in list(self._listeners))

    def call(self, worker, msg, timeout=None):
        """Send task message ``msg`` to ``worker`` on its channel, with the others sent in
        this turn of the loop; its reply's result (see :class:`~distributed3.core.channel.Channel`)."""
        return self.channels.call(worker, msg, timeout)

    def rpc(self, worker, timeout=None):
        """An rpc proxy to ``worker`` over the session's connections; with ``timeout``,
        its calls raise ``TimeoutError`` after waiting that long for a reply (for quick
        ones, which a frozen worker must not hold up for good)."""
        if timeout is None:
            return self.connections(worker)
        return rpc(worker, connection_pool=self.connections, timeout=timeout)

    # -- keys ---------------------------------------------------------------------

    def new_key(self, name):
        """A key no other client or call makes: ``name-<session id>-<counter>``."""
        return f"{name}-{self.id}-{next(self._counter)}"

    def adopt(self, keys):
        """We own ``keys``, which tasks will make: the workers' reports tell the center."""
        self._owned.update(keys)

    async def own(self, keys):
        """Tell the center, now, that we made ``keys``, so they go if we vanish; releases
        waiting to go out travel in the same message."""
        self._owned.update(keys)
        self._notes["own"].extend(keys)
        await self._send_notes()

    def forget(self, keys):
        """Keys we deleted ourselves: no release is due for them."""
        self._owned.difference_update(keys)

    def release(self, keys):
        """Tell the center, soon, that nobody here needs ``keys`` (owned or not)."""
        self._owned.difference_update(keys)
        self._note_release(keys)

    def release_soon(self, key):
        """Called from a handle's ``__del__``, in any thread: release ``key`` within
        ``NOTE_DELAY`` seconds -- waking the loop once for all the keys dropped by then,
        not once per handle."""
        self._to_release.append(key)
        if not self._release_due:
            self._release_due = True
            self.loop.call_soon_threadsafe(self.loop.call_later, NOTE_DELAY, self._releases_due)

    def _releases_due(self):
        self._release_due = False  # before draining: a key added after this schedules again
        asyncio.ensure_future(self._flush_releases())

    async def _flush_releases(self):
        keys = []
        while self._to_release:
            keys.append(self._to_release.popleft())
        keys = [k for k in keys if k in self._owned]
        if keys and self.status == "running":
            self.release(keys)

    def _note_release(self, keys):
        notes = self._notes
        if not notes["own"] and not notes["release"]:
            self.loop.call_later(NOTE_DELAY, lambda: asyncio.ensure_future(self._send_notes()))
        notes["release"].extend(keys)

    async def _send_notes(self):
        notes, self._notes = self._notes, {"own": [], "release": []}
        if notes["own"] or notes["release"]:
            if not await self.tell_center({"op": "ownership", **notes, "reply": False}):
                # the center is away: subscribing again re-owns what we hold (_owned),
                # and must release these, or they would stay on the workers
                self._unsent_releases.extend(notes["release"])

    # -- data, for handles and batches -------------------------------------------------

    async def gather(self, seq):
        """The values behind ``seq``'s handles (see :func:`distributed3.client.data.gather`)."""
        return await data.gather(self, seq)

    async def recover(self, handles):
        """Make the data behind ``handles`` live again, computing or sending it anew
        (see :func:`distributed3.client.recovery.recover`)."""
        await recovery.recover(self, handles)
