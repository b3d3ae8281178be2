"""The center: which worker holds which key, and which workers are alive.

Metadata only, never user data::

    worker --register(address, ncores, keys)---> center   the connection stays open;
    worker --add_keys / remove_keys -----------> center   when it closes, the worker is gone
    client --who_has / has_what / ncores ------> center
    client --subscribe ------------------------> center --add_worker / remove_worker--> client

Its state is soft: a restarted center is rebuilt by workers registering again
with the keys they hold.

>>> import asyncio
>>> from distributed3.core import rpc
>>> async def demo():
...     center = await Center().start(port=0)
...     async with rpc(center.address) as c:
...         await c.register(address=("127.0.0.1", 9001), ncores=2)
...         await c.add_keys(address=("127.0.0.1", 9001), keys=["x"], nbytes={"x": 8})
...         who = await c.who_has(keys=["x"])
...     await center.close()
...     return who
>>> asyncio.run(demo())
{'x': {('127.0.0.1', 9001)}}
"""
import asyncio
import logging
import time
from collections import Counter, OrderedDict, defaultdict, deque

from ..core.server import ConnectionPool, Server
from ..keys import split_element
from ..utils import format_address, parse_address, wait_for
from ..versions import versions
from .ownership import KeyOwnership
from .telemetry import TelemetryStore

logger = logging.getLogger(__name__)

DEATHS_KEPT = 100  # worker deaths reported by nannies, kept for get_deaths
HEARTBEATS_PER_SECOND = 200  # at most, at idle: past 200 workers, each beats less often
MISSED_BEATS = 3  # a worker is dropped once silent this many of its intervals (or the timeout)


def heartbeat_interval(nworkers):
    """The least number of seconds between the heartbeats of each of ``nworkers``
    workers that keeps the center at ``HEARTBEATS_PER_SECOND`` at idle, however big the
    cluster: workers beat every second (their ``heartbeat_interval``), or this often if
    less.  A worker that reports keys sends no heartbeat meanwhile, and a broken
    connection is seen at once: only a frozen worker is found later.

    >>> heartbeat_interval(10), heartbeat_interval(1000), heartbeat_interval(10_000)
    (0.05, 5.0, 50.0)
    """
    return nworkers / HEARTBEATS_PER_SECOND


class Center(KeyOwnership, Server):
    """The metadata server: ``who_has``, ``has_what``, ``nbytes``, ``ncores``.

    Start it in a coroutine and stop it the same way::

        center = await Center(secret=b"...").start(host="127.0.0.1", port=8787)
        ...
        await center.close()

    or from the command line with ``dcenter``.
    """

    def __init__(self, *, heartbeat_timeout=15.0, client_grace=5.0, telemetry=False, **kwargs):
        handlers = {
            "register": self.register, "unregister": self.unregister,
            "add_keys": self.add_keys, "remove_keys": self.remove_keys,
            "who_has": self.get_who_has, "has_what": self.get_has_what,
            "ncores": self.get_ncores, "nbytes": self.get_nbytes, "workers": self.get_workers,
            "subscribe": self.subscribe, "heartbeat": self.heartbeat,
            "own_keys": self.own_keys, "release_keys": self.release_keys,
            "ownership": self.ownership, "counters": self.get_counters,
            "worker_died": self.worker_died, "deaths": self.get_deaths,
            "backlog": self.backlog, "dashboard": lambda comm: self.dashboard,
        }  # fmt: skip
        super().__init__(handlers, **kwargs)
        # key -> tuple of holders: tuples of addresses are immutable and hold no containers,
        # so the cyclic GC stops tracking them -- a center holds one per key
        self.who_has = {}
        # chunk key -> keys of its elements that are held on their own ("G#3": a copy,
        # or a recomputed element), released with the chunk
        self.parts = defaultdict(set)
        self.has_what = defaultdict(set)
        self.nbytes = {}
        # worker -> bytes of the keys it holds, kept as keys come and go: no message
        # costs the center O(keys) (see tests/test_center.py)
        self.held_bytes = defaultdict(int)
        self.ncores = {}
        self.names = {}
        self.resources = {}  # worker -> {"GPU": 2, ...}
        self.versions = {}  # worker -> {"python": ..., ...} as it registered
        self.own_versions = versions()
        self.pids = OrderedDict()  # worker -> its process id, kept a while after it leaves
        self.deaths = deque(maxlen=DEATHS_KEPT)  # what nannies said of dead workers
        self.last_seen = {}
        self.beat_every = {}  # worker -> the heartbeat interval it was last told
        self.worker_comms = {}  # connection -> the worker registered on it
        self.comms_of = defaultdict(set)  # and back: worker -> its connections
        self.subscribers = set()
        self.started = time.time()
        self.heartbeat_timeout = heartbeat_timeout
        self._reaper = None
        self.client_grace = client_grace
        self.clients = {}  # subscription comm -> client id
        self.subscribed = Counter()  # client id -> its subscriptions (clients.values())
        self.owned = defaultdict(set)  # client id -> keys it created
        self.owner = {}  # key -> client id
        # released keys -> when: a report of one that comes later (the task's own, or a
        # copy's made before the release) makes the center tell that worker to drop it
        self.released = OrderedDict()
        self.gone = OrderedDict()  # client -> None: its keys were released for good
        self.awaited = set()  # owners of reported keys given client_grace to subscribe
        self.backlogs = {}  # client id -> its tasks not finished, as it last said
        self.peers = ConnectionPool(secret=self.secret, tls=self.tls, limits=self.limits)
        # what a dashboard shows, when one is served: workers are asked to report it
        self.telemetry = TelemetryStore() if telemetry else None
        self.dashboard = None  # {"host", "port"} of its web pages, once they are served

    async def start(self, host="127.0.0.1", port=0, sockets=None):
        await super().start(host, port, sockets)
        if self.heartbeat_timeout:
            self._reaper = asyncio.ensure_future(self._reap_silent_workers())
        logger.info("Started center at %s", format_address(self.address))
        return self

    async def close(self):
        if self._reaper is not None:
            self._reaper.cancel()
        for comm in list(self.subscribers):
            comm.close()
        await self.peers.close()
        await super().close()
        logger.info("Center at %s closed", format_address(self.address))

    # -- worker membership ---------------------------------------------------

    def register(self, comm, address, ncores, keys=(), nbytes=None, name=None, resources=None,
                 owners=None, pid=None, versions=None):  # fmt: skip
        """A worker joins (or rejoins) with the keys it already holds, the clients
        that own those it computed (``owners``), and the versions it runs."""
        address = parse_address(address)
        ncores = int(ncores)
        if ncores < 1:
            raise ValueError(f"worker {format_address(address)} announced {ncores} cores")
        if address in self.ncores:
            self._remove_worker(address, "it registered again")
        self.ncores[address] = ncores
        self.names[address] = name
        self.resources[address] = dict(resources or {})
        self.versions[address] = versions
        self.last_seen[address] = time.monotonic()
        self.pids.pop(address, None)
        self.pids[address] = pid
        while len(self.pids) > len(self.ncores) + DEATHS_KEPT:  # the departed, oldest first
            self.pids.popitem(last=False)
        self.worker_comms[comm] = address
        self.comms_of[address].add(comm)
        self.add_keys(comm, address, keys, nbytes, owners)
        logger.info("Register worker %s with %d cores", format_address(address), ncores)
        self._publish({"op": "add_worker", "address": address, "ncores": ncores,
                       "resources": self.resources[address], "versions": versions})  # fmt: skip
        return {"center": self.address, "telemetry": self.telemetry is not None,
                "heartbeat": self._beat_for(address)}  # fmt: skip

    def _beat_for(self, address):
        """The heartbeat interval to tell ``address``, remembered for the reaper."""
        interval = self.beat_every[address] = heartbeat_interval(len(self.ncores))
        return interval

    def unregister(self, comm, address):
        """A worker leaves on purpose; its keys are forgotten."""
        address = self._speaks_for(comm, address)
        self._forget_comm(comm)
        self._remove_worker(address, "it left")

    def _forget_comm(self, comm):
        address = self.worker_comms.pop(comm, None)
        comms = self.comms_of.get(address)
        if comms is not None:
            comms.discard(comm)
            if not comms:
                del self.comms_of[address]
        return address

    def _speaks_for(self, comm, address):
        """``address`` if ``comm`` is the connection that worker registered on, else an error."""
        address = parse_address(address)
        if self.worker_comms.get(comm) != address:
            raise ValueError(
                f"{format_address(comm.peer)} may only speak for the worker it registered "
                f"on this connection, not for {format_address(address)}"
            )
        return address

    def connection_closed(self, comm):
        self.subscribers.discard(comm)
        client = self.clients.pop(comm, None)
        if client is not None:
            self.subscribed[client] -= 1
            if not self.subscribed[client]:
                del self.subscribed[client]
        if client is not None and not self._closing:
            asyncio.get_running_loop().call_later(self.client_grace, self._client_gone, client)
        address = self._forget_comm(comm)
        if address is not None and address in self.ncores:
            self._remove_worker(address, "its connection closed")

    def _remove_worker(self, address, why):
        if address not in self.ncores:
            return
        for key in self.has_what.pop(address, ()):
            self._drop_holder(key, address)
        del self.ncores[address]
        self.held_bytes.pop(address, None)
        self.names.pop(address, None)
        self.resources.pop(address, None)
        self.versions.pop(address, None)
        self.last_seen.pop(address, None)
        self.beat_every.pop(address, None)
        for comm in self.comms_of.pop(address, ()):
            del self.worker_comms[comm]
        if self.telemetry is not None:
            self.telemetry.forget(address)
        logger.info("Remove worker %s: %s", format_address(address), why)
        self._publish({"op": "remove_worker", "address": address})

    def worker_died(self, comm, host, pid, cause):
        """A nanny says its worker process ``pid`` on ``host`` died, and why (``"was
        killed by SIGKILL (out of memory? ...)"``): the center logs it, forgets that worker
        if its connection has not closed yet, tells the clients (whose errors then name
        the cause), and keeps it for :meth:`get_deaths`."""
        address = next((a for a, p in reversed(self.pids.items())
                        if p == pid and a[0] == host), None)  # fmt: skip
        where = format_address(address) if address else f"{host} (not registered yet)"
        logger.warning("Worker %s, process %s, %s", where, pid, cause)
        self.deaths.append({"address": address, "pid": pid, "cause": cause, "time": time.time(),
                            "name": self.names.get(address)})  # fmt: skip
        if address is None:
            return
        if address in self.ncores:
            self._disconnect(address, f"its process {cause}")
        self._publish({"op": "worker_died", "address": address, "cause": cause})

    def get_deaths(self, comm):
        """The last deaths that nannies reported, oldest first: dicts with the worker's
        ``address`` (None if it died before registering), ``pid``, ``cause`` and ``time``."""
        return list(self.deaths)

    def _disconnect(self, address, why):
        """Close ``address``'s connections (it must register again, should it still be
        alive) and forget it."""
        for comm in list(self.comms_of.get(address, ())):
            comm.close()
        self._remove_worker(address, why)

    def heartbeat(self, comm, address, telemetry=None):
        """A worker says it is alive (and, for a dashboard, what it did: ``telemetry``);
        the center answers how long to wait before the next (:func:`heartbeat_interval`)."""
        address = self._speaks_for(comm, address)
        self.last_seen[address] = time.monotonic()
        self._note_telemetry(address, telemetry)
        return {"heartbeat": self._beat_for(address)}

    def _note_telemetry(self, address, report):
        if report is not None and self.telemetry is not None:
            self.telemetry.update(address, report)

    async def _reap_silent_workers(self):
        """Remove workers not heard from within ``heartbeat_timeout`` seconds, or
        ``MISSED_BEATS`` of the intervals they were told, if longer."""
        while True:
            await asyncio.sleep(self.heartbeat_timeout / 4)
            now, timeout, beat_every = time.monotonic(), self.heartbeat_timeout, self.beat_every
            for address, seen in list(self.last_seen.items()):
                allowed = max(timeout, MISSED_BEATS * beat_every.get(address, 0))
                if seen < now - allowed and address in self.ncores:
                    silent = time.monotonic() - seen
                    self._disconnect(address, f"silent for {silent:.1f} s")

    # -- keys ----------------------------------------------------------------

    def add_keys(self, comm, address, keys, nbytes=None, owners=None, telemetry=None):
        """``address`` now holds ``keys`` (sizes in ``nbytes``), made for ``owners``
        (``{key: client}``): the results of tasks that clients sent it."""
        address = self._speaks_for(comm, address)
        self._note_telemetry(address, telemetry)
        self.last_seen[address] = time.monotonic()
        if owners:
            for key, client in owners.items():
                if client in self.gone:  # the result came after its client went
                    self.released[key] = time.monotonic()
                elif not self._is_released(key):
                    self.owner[key] = client
                    self.owned[client].add(key)
            self._await_owners(set(owners.values()))
        if self.released:  # kept until they expire: more than one copy may report late
            dead = [k for k in keys if self._is_released(k)]
            if dead:
                asyncio.ensure_future(self._delete_on(address, dead))
                dead = set(dead)
                keys = [k for k in keys if k not in dead]
        for key in keys:
            element = split_element(key)
            if element is not None:
                self.parts[element[0]].add(key)
        held = self.has_what[address]
        held.update(keys)
        who_has, sizes, held_bytes = self.who_has, self.nbytes, self.held_bytes
        if nbytes:
            for key in keys:
                n = nbytes.get(key)
                old = sizes.get(key)
                if n is not None and n != old:
                    sizes[key] = n
                    for holder in who_has.get(key, ()):  # a new size for its holders
                        held_bytes[holder] += n - (old or 0)
        added = 0
        for key in keys:
            holders = who_has.get(key)
            if holders is None:
                who_has[key] = (address,)
            elif address in holders:
                continue
            else:
                who_has[key] = (*holders, address)
            added += sizes.get(key, 0)
        held_bytes[address] += added

    def _is_released(self, key):
        element = split_element(key)
        return key in self.released or (element is not None and element[0] in self.released)

    def _holders(self, key):
        """Who holds ``key``: an element's own copies, and the holders of its chunk."""
        holders = self.who_has.get(key, ())
        element = split_element(key)
        if element is not None:
            holders = (*holders, *self.who_has.get(element[0], ()))
        return holders

    def remove_keys(self, comm, address, keys, telemetry=None):
        """``address`` no longer holds ``keys``."""
        address = self._speaks_for(comm, address)
        self._note_telemetry(address, telemetry)
        held = self.has_what.get(address, set())
        for key in keys:
            held.discard(key)
            self._drop_holder(key, address)

    def _drop_holder(self, key, address):
        """``address`` no longer holds ``key``; a key nobody holds is forgotten."""
        holders = self.who_has.get(key)
        if holders is not None and address in holders:
            self.held_bytes[address] -= self.nbytes.get(key, 0)
            rest = tuple(h for h in holders if h != address)
            if rest:
                self.who_has[key] = rest
            else:
                del self.who_has[key]
                self.nbytes.pop(key, None)
                # a chunk whose elements are held on their own stays owned: releasing it
                # (or its client going) releases them
                client = None if key in self.parts else self.owner.pop(key, None)
                if client is not None:
                    self.owned[client].discard(key)
                element = split_element(key)
                if element is not None:
                    self._forget_part(element[0], key)

    def _forget_part(self, group, key):
        parts = self.parts.get(group)
        if parts is not None:
            parts.discard(key)
            if not parts:
                del self.parts[group]

    def get_who_has(self, comm, keys=None, parts=False, own=()):
        """``{key: {worker}}`` for ``keys`` (all keys when ``None``); the element ``G#i``
        of a chunk's results is wherever it or its chunk ``G`` is, but for the elements
        in ``own``, which its chunk does not hold (split off from it while it ran: see
        ``client/sharing.py``).  With ``parts``, the elements of the chunks among
        ``keys`` that are held on their own are added."""
        if keys is None:
            return {k: set(v) for k, v in self.who_has.items()}
        out = {k: set(self._holders(k)) for k in keys}
        for k in own:
            out[k] = set(self.who_has.get(k, ()))
        if parts:
            for k in keys:
                for part in self.parts.get(k, ()):
                    out[part] = set(self.who_has.get(part, ()))
        return out

    def get_has_what(self, comm, workers=None):
        """``{worker: {key}}`` for ``workers`` (all workers when ``None``)."""
        if workers is None:
            workers = self.ncores
        return {w: set(self.has_what.get(w, ())) for w in map(parse_address, workers)}

    def get_ncores(self, comm):
        """``{worker: cores}`` of every live worker."""
        return dict(self.ncores)

    def get_nbytes(self, comm, keys=None):
        """``{key: bytes}`` for ``keys`` (all keys when ``None``)."""
        if keys is None:
            return dict(self.nbytes)
        return {k: self.nbytes[k] for k in keys if k in self.nbytes}

    def get_workers(self, comm):
        """``{worker: {"ncores", "nkeys", "nbytes", "name", "pid"}}`` as the center sees it."""
        return {
            w: {
                "ncores": n,
                "name": self.names.get(w),
                "resources": self.resources.get(w, {}),
                "nkeys": len(self.has_what.get(w, ())),
                "nbytes": self.held_bytes.get(w, 0),
                "pid": self.pids.get(w),
            }
            for w, n in self.ncores.items()
        }

    def get_counters(self, comm):
        """Messages handled per op, and ``bytes_in``, since the center started."""
        return dict(self.counters)

    # -- membership events ---------------------------------------------------

    def subscribe(self, comm, client=None, keys=()):
        """Push ``add_worker`` / ``remove_worker`` events on this connection from now on.

        A ``client`` that subscribes owns the keys it names here or later with
        ``own_keys``; when its connection closes and it does not subscribe again
        within ``client_grace`` seconds, the workers drop those keys.
        """
        self.subscribers.add(comm)
        if client is not None:
            if self.clients.get(comm) != client:
                self.subscribed[client] += 1
            self.clients[comm] = client
            self.gone.pop(client, None)
            self.own_keys(comm, keys)
        return {"workers": dict(self.ncores), "resources": dict(self.resources),
                "versions": {w: self.versions.get(w) for w in self.ncores},
                "center_versions": self.own_versions}  # fmt: skip

    def backlog(self, comm, client=None, tasks=None):
        """``{client: tasks}``: the tasks each connected client has not seen finish, as
        it reports them (every half second while they change) -- what an adaptive
        cluster grows by.  With ``client`` and ``tasks``, that client's report."""
        if client is not None and tasks is not None:
            if tasks:
                self.backlogs[client] = int(tasks)
            else:
                self.backlogs.pop(client, None)
        return {c: n for c, n in self.backlogs.items() if self.subscribed.get(c)}

    # -- membership events out --------------------------------------------------

    def _publish(self, event):
        for comm in list(self.subscribers):
            asyncio.ensure_future(self._push(comm, event))

    async def _push(self, comm, event):
        try:
            await comm.write(event)
        except Exception as e:
            logger.debug("dropping subscriber %s: %s", comm, e)
            self.subscribers.discard(comm)
            comm.close()

    async def wait_for_workers(self, n, timeout=10):
        """Wait until at least ``n`` workers are registered."""
        await wait_for(
            lambda: len(self.ncores) >= n,
            timeout,
            f"center {format_address(self.address)} has {len(self.ncores)} of {n} workers",
        )
