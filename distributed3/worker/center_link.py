"""A worker's side of its talk with the center: registering, key reports, heartbeats.

::

    worker --register(ncores, keys, nbytes, owners)--> center      (again after any loss)
    worker --add_keys / remove_keys, batched every few ms--> center
    worker --heartbeat, when there was nothing to report--> center
           <--how long to wait before the next: longer in a big cluster--

One connection, one message at a time, from one coroutine (``_center_loop``).  New
keys are queued (``_queue_report``) and go out together ``REPORT_DELAY`` later,
never on a task's path; ``_report`` waits until the center has acknowledged them.
A lost center is registered with again, which reports every key held.

Mixed into :class:`distributed3.worker.worker.Worker`, which provides ``center_address``,
``address``, ``data``, ``nbytes``, ``owners`` and the connection settings.
"""
import asyncio
import logging
import os

from ..core.comm import connect
from ..core.server import request
from ..exceptions import CommClosedError, ConnectionBrokenError
from ..utils import Backoff, format_address
from ..versions import versions
from .telemetry import Telemetry

logger = logging.getLogger(__name__)

# seconds a key report waits for others to go with it: nobody's task waits for it, and
# each report costs the worker and the center a round trip (at 5 ms, ~40 us of worker
# CPU per tiny task in a stream of round trips, on a 2-core VM)
REPORT_DELAY = 0.05


class CenterLink:
    """Registering with the center and reporting keys to it, for a worker."""

    def _init_center_link(self):
        self.center_wait = 0  # seconds to wait for a center that is not up at the start
        # seconds without a center before this worker gives up and leaves (None: never),
        # so that workers a batch system or SSH started do not outlive their cluster
        self.death_timeout = None
        self._center_lost = None  # when the center was lost, while it is
        self._center_comm = None
        self._pending_add = {}
        self._pending_remove = set()
        self._waiters = []
        self._wake = asyncio.Event()
        self._center_task = None
        self._beat_every = None  # seconds between heartbeats, once registered: see _heed

    async def _register_when_up(self, wait):
        """Register, trying again for up to ``wait`` seconds while the center is not up
        (started at the same time as the workers, by a batch system or a script)."""
        backoff = Backoff(first=0.1, most=2.0, deadline=wait)
        while True:
            try:
                return await self._register()
            except (ConnectionBrokenError, OSError, TimeoutError) as e:
                if not wait or not await backoff.wait():
                    raise
                if backoff.delay <= 0.2:  # said once, at the first failure
                    logger.info("Waiting up to %g s for the center at %s: %s", wait,
                                format_address(self.center_address), e)  # fmt: skip

    @property
    def center_connected(self):
        """Whether this worker is registered with its center now."""
        return self._center_comm is not None

    async def _call_center(self, comm, op, **kwargs):
        return await request(comm, {"op": op, "address": self.address, **kwargs})

    async def _register(self):
        comm = await connect(self.center_address, self.secret, limits=self.limits, tls=self.tls)
        # registering reports every key we hold, with its owner: reports still queued
        # would only repeat it, late (after, say, the center told us to drop a key)
        self._pending_add, self._pending_remove = {}, set()
        try:
            reply = await self._call_center(
                comm, "register", ncores=self.ncores, keys=list(self.data),
                nbytes=dict(self.nbytes), name=self.name, resources=self.resources,
                owners=self.owners, pid=os.getpid(), versions=versions(),
            )  # fmt: skip
        except BaseException:
            comm.close()
            raise
        self._heed(reply)
        # a center with a dashboard asks for what its pages show (see telemetry.py)
        wants = isinstance(reply, dict) and reply.get("telemetry")
        if not wants:
            self.runner.telemetry = None
        elif self.runner.telemetry is None:
            self.runner.telemetry = Telemetry()
        self._center_comm = comm

    def _heed(self, reply):
        """Beat as often as this worker's ``heartbeat_interval`` says, or as the center
        asks (less often, in a big cluster: see ``center.heartbeat_interval``)."""
        asked = reply.get("heartbeat") if isinstance(reply, dict) else None
        self._beat_every = max(self.heartbeat_interval, asked or 0)

    async def _report(self, add=None, remove=(), owner=None):
        """Tell the center about new and dropped keys; returns once it acknowledged."""
        self._queue_report(add, remove, owner)
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        await done

    def _queue_report(self, add=None, remove=(), owner=None):
        """Tell the center about new and dropped keys (and who owns new ones) with the
        next batch, soon."""
        for key in remove:
            self._pending_add.pop(key, None)
            self.owners.pop(key, None)
            self._pending_remove.add(key)
        if add:
            for key, n in add.items():
                self._pending_remove.discard(key)
                self._pending_add[key] = n
                if owner is not None:
                    self.owners[key] = owner
        self._wake.set()

    async def _center_loop(self):
        """Send batched key reports and heartbeats; re-register if the center is lost."""
        backoff = Backoff(first=0.05, most=2.0)
        while not self._closing:
            try:
                if self._center_comm is None:
                    await self._register()
                    logger.info("Registered again with %s", format_address(self.center_address))
                    self._release_waiters()  # registering sends every key we hold
                    backoff.reset()
                    self._center_lost = None
                try:
                    await asyncio.wait_for(self._wake.wait(), self._beat_every)
                except asyncio.TimeoutError:
                    pass
                if not self._waiters:  # nobody waits for this report: let a few more join it
                    await asyncio.sleep(REPORT_DELAY)
                self._wake.clear()
                add, self._pending_add = self._pending_add, {}
                remove, self._pending_remove = self._pending_remove, set()
                waiters, self._waiters = self._waiters, []
                comm = self._center_comm
                extra = self._telemetry_due()  # with the first message that goes
                try:
                    if add:
                        owners = {k: self.owners[k] for k in add if k in self.owners}
                        await self._call_center(comm, "add_keys", keys=list(add), nbytes=add,
                                                owners=owners, **extra)  # fmt: skip
                        extra = {}
                    if remove:
                        await self._call_center(comm, "remove_keys", keys=list(remove),
                                                **extra)  # fmt: skip
                        extra = {}
                    if not add and not remove:
                        self._heed(await self._call_center(comm, "heartbeat", **extra))
                except BaseException:  # registering again reports every key: then they go
                    self._waiters = waiters + self._waiters
                    raise
                # only the reports this batch carried: one queued while it went out (a
                # key handed over by a leaving peer, say) waits for the next batch
                _release(waiters)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # a lost connection, or a center that no longer knows us (it took us for
                # dead): register again, which reports every key we hold
                if self._closing:
                    return
                if self._center_comm is not None:
                    lost = isinstance(e, (ConnectionBrokenError, CommClosedError, OSError))
                    logger.warning("%s center %s: %s; registering again",
                                   "Lost" if lost else "Error from",
                                   format_address(self.center_address), e)  # fmt: skip
                    self._center_comm.close()
                    self._center_comm = None
                    self._center_lost = asyncio.get_running_loop().time()
                if self._outlived_center():
                    return
                await backoff.wait()

    def _outlived_center(self):
        """After ``death_timeout`` s without a center: leave (the process ends with the
        worker, status 0 so that a nanny does not start it again)."""
        lost = self._center_lost
        if self.death_timeout is None or lost is None:
            return False
        if asyncio.get_running_loop().time() - lost < self.death_timeout:
            return False
        logger.warning("No center at %s for %g s (--death-timeout): leaving",
                       format_address(self.center_address), self.death_timeout)  # fmt: skip
        asyncio.ensure_future(self.close(report=False, handoff=False))
        return True

    def _telemetry_due(self):
        """``{"telemetry": report}`` once a second for a center that asked, else ``{}``."""
        telemetry = self.runner.telemetry
        if telemetry is None or not telemetry.due():
            return {}
        return {"telemetry": telemetry.take(self.info())}

    def _release_waiters(self):
        waiters, self._waiters = self._waiters, []
        _release(waiters)


def _release(waiters):
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
