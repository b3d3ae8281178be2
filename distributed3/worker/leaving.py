"""A worker's leaving: retiring when its time is up or when asked, and handing the keys
only it holds to its peers first.

Mixed into :class:`distributed3.worker.worker.Worker`, which provides ``data``,
``active``, ``peers``, ``center_address``, ``close()`` and ``handoff_timeout``.
"""
import asyncio
import logging
from collections import defaultdict

from ..scheduling import spread

logger = logging.getLogger(__name__)


class Leaving:
    """Retirement and hand-off, for a worker."""

    retiring = None  # why, once retiring
    avoid: frozenset = frozenset()  # peers not to hand keys to: they are retiring too

    def retire_asked(self, comm=None, why="its cluster asked", avoid=()):
        """Retire, as a cluster that scales down asks (handler ``retire``): hand the keys
        over even where this worker was started not to (a local cluster's), and not to
        the workers in ``avoid``, retiring at the same time."""
        self.handoff_timeout = self.handoff_timeout or 30.0
        self.avoid = frozenset(tuple(a) for a in avoid)
        self.retire(why)

    def retire(self, why):
        """Leave gracefully: take no new tasks, finish running ones, hand keys to peers."""
        if self.retiring is None and not self._closing:
            self.retiring = why
            logger.info("Retiring: %s", why)
            asyncio.ensure_future(self._retire())

    async def _retire(self):
        while self.active:
            await asyncio.sleep(0.01)
        await self.close()

    async def _hand_off(self):
        """Send every key that no other worker holds to the peers, spread by cores."""
        # first the reports still queued: they carry the keys' owners, which the peers'
        # own reports do not, and without which a vanished client's keys would stay
        if self._pending_add:
            try:
                await asyncio.wait_for(self._report(), 2)
            except asyncio.TimeoutError:
                pass  # the center is away: asking it who has what fails just below
        center = self.peers(self.center_address)
        who_has = await center.who_has(keys=list(self.data))
        only_here = [k for k in self.data if set(who_has.get(k, ())) <= {self.address}]
        peers = {w: n for w, n in (await center.ncores()).items()
                 if w != self.address and w not in self.avoid}  # fmt: skip
        if not only_here:
            return
        if not peers:
            logger.warning("Leaving with %d keys that no other worker holds", len(only_here))
            return
        groups = defaultdict(dict)
        for key, worker in zip(only_here, spread(len(only_here), peers)):
            groups[worker][key] = self.data[key]
        await asyncio.gather(*[self.peers(w).update_data(data=d) for w, d in groups.items()])
        logger.info("Handed %d keys to %d peers before leaving", len(only_here), len(groups))
