"""Which client owns which key, and letting keys go: a part of the center.

A client that subscribes owns the keys it makes (``own_keys``, or reported by the
workers with their owner).  ``release_keys`` forgets keys and tells their holders to
drop them; a client whose connection closes and does not come back within
``client_grace`` seconds has all its keys released.  Keys released are remembered a
while, so that a late report of one (a copy made before the release) is answered with
a deletion, not kept.

Mixed into :class:`~distributed3.center.Center`, which provides ``who_has``,
``has_what``, ``nbytes``, ``parts``, ``clients``, ``peers`` and the rest of its tables.

>>> KeyOwnership.release_keys.__doc__.split(":")[0]
'Nobody needs ``keys`` any more'
"""
import asyncio
import logging
import time
from collections import defaultdict

from ..keys import split_element
from ..utils import format_address

logger = logging.getLogger(__name__)

RELEASED_MEMORY = 30.0  # seconds a released key's late reports (a copy in flight) are dropped
RELEASED_KEYS = 500_000  # at most this many released keys remembered
GONE_MEMORY = 10_000  # clients remembered as gone, so that their late results are dropped


class KeyOwnership:
    """The center's handlers and helpers for the ownership and release of keys."""

    def own_keys(self, comm, keys):
        """The client subscribed on ``comm`` created ``keys``."""
        client = self.clients.get(comm)
        if client is None:
            raise ValueError(f"{format_address(comm.peer)} has not subscribed as a client")
        self.owned[client].update(keys)
        for key in keys:
            self.owner[key] = client
            self.released.pop(key, None)  # made again (lineage): its reports count

    def ownership(self, comm, own=(), release=()):
        """``own_keys(own)`` then ``release_keys(release)``, in one message."""
        if own:
            self.own_keys(comm, own)
        return self.release_keys(comm, release) if release else 0

    def release_keys(self, comm, keys):
        """Nobody needs ``keys`` any more: the workers holding them drop them."""
        by_worker = defaultdict(list)
        now = time.monotonic()
        released = self.released
        while released and (len(released) > RELEASED_KEYS
                            or next(iter(released.values())) < now - RELEASED_MEMORY):  # fmt: skip
            released.popitem(last=False)
        parts = self.parts
        if parts:  # a chunk's elements held on their own go with it
            keys = [*keys, *(p for k in keys if k in parts for p in parts.pop(k))]
        for key in keys:
            # a report may still come: the task's, or a copy's made before the release
            released[key] = now
            element = split_element(key)
            if element is not None:
                self._forget_part(element[0], key)
            client = self.owner.pop(key, None)
            if client is not None:
                self.owned[client].discard(key)
            holders = self.who_has.pop(key, None)
            if not holders:  # its worker's report has not come yet
                continue
            size = self.nbytes.pop(key, 0)
            for worker in holders:
                self.held_bytes[worker] -= size  # forgotten here now: the workers need not report it
                self.has_what[worker].discard(key)
                by_worker[worker].append(key)
        for worker, held in by_worker.items():
            asyncio.ensure_future(self._delete_on(worker, held))
        return sum(map(len, by_worker.values()))

    async def _delete_on(self, worker, keys):
        try:
            await self.peers(worker).delete_data(keys=keys, report=False)
        except Exception as e:
            logger.info("Could not release %d keys on %s: %s", len(keys), format_address(worker), e)

    def _await_owners(self, clients):
        """Owners of reported keys that are not subscribed (this center restarted and
        heard of their keys first, or they died meanwhile): their keys go unless they
        subscribe within ``client_grace`` seconds, as for a client whose connection
        closed."""
        absent = {c for c in clients if c not in self.subscribed and c not in self.gone
                  and c not in self.awaited}  # fmt: skip
        loop = asyncio.get_running_loop()
        for client in absent:
            self.awaited.add(client)
            loop.call_later(self.client_grace, self._owner_overdue, client)

    def _owner_overdue(self, client):
        self.awaited.discard(client)
        self._client_gone(client)

    def _client_gone(self, client):
        if client in self.subscribed or self._closing:
            return  # it came back in time
        self.gone[client] = None  # however late its results come, they go
        self.backlogs.pop(client, None)
        while len(self.gone) > GONE_MEMORY:
            self.gone.popitem(last=False)
        keys = self.owned.pop(client, set())
        if keys:
            logger.info("Client %s is gone; releasing its %d keys", client, len(keys))
            self.release_keys(None, list(keys))
