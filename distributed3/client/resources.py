"""What the tasks running on each worker hold of its resources (``{"GPU": 1}``), for
:class:`~distributed3.client.session.Session`: a task that asks for resources waits here
until the worker it goes to has them free.
"""
import asyncio
from collections import defaultdict


class Resources:
    """Resource accounting, mixed into the session (which provides ``resources``)."""

    def _init_resources(self):
        self._in_use = defaultdict(lambda: defaultdict(float))  # worker -> resource -> held
        self._freed = None  # an event set whenever a task gives resources back

    def has_resources(self, worker, need):
        """Whether ``worker`` has at least ``need`` (``{"GPU": 1}``) in all."""
        totals = self.resources.get(worker, {})
        return all(totals.get(r, 0) >= n for r, n in need.items())

    def _fits(self, worker, need):
        totals = self.resources.get(worker, {})
        used = self._in_use[worker]
        return all(used[r] + n <= totals.get(r, 0) for r, n in need.items())

    async def reserve(self, worker, need):
        """Hold ``need`` of ``worker``'s resources, waiting while other tasks hold them."""
        while not self._fits(worker, need):
            if self._freed is None:
                self._freed = asyncio.Event()
            self._freed.clear()
            await self._freed.wait()
        for r, n in need.items():
            self._in_use[worker][r] += n

    def give_back(self, worker, need):
        """Release what :meth:`reserve` held."""
        for r, n in need.items():
            self._in_use[worker][r] -= n
        if self._freed is not None:
            self._freed.set()
