"""What a pool can ask about its cluster: where keys are, what workers hold and run, and
how they died.  :class:`ClusterInfo` is the part of :class:`~distributed3.Pool` that
asks; every method needs only ``self.session``.

>>> sorted(pool.worker_info()) == sorted(pool.available_cores)
True
"""
import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from ..core.security import dashboard_link
from ..exceptions import CommClosedError, ConnectionBrokenError
from ..utils import Address, format_address
from . import data
from .session import Session

logger = logging.getLogger(__name__)


async def worker_info(session):
    """``{worker: its info()}``, without the workers that died since the center listed
    them, nor those that did not answer within the session's ``timeout`` (frozen, or
    too busy to): a warning names those (see :meth:`ClusterInfo.worker_info`).

    >>> len(pool.session.sync(worker_info(pool.session))) == pool.nworkers
    True
    """
    session.check()
    workers = list(session.cores)
    infos = await asyncio.gather(*[session.rpc(w, session.timeout).info() for w in workers],
                                 return_exceptions=True)  # fmt: skip
    out = {}
    for worker, info in zip(workers, infos):
        if isinstance(info, (ConnectionBrokenError, CommClosedError)):
            continue  # it died since the center listed it: it is no longer there
        if isinstance(info, TimeoutError):  # a status call: no reason to wait longer
            logger.warning("Worker %s is left out of worker_info: %s",
                           format_address(worker), info)  # fmt: skip
            continue
        if isinstance(info, BaseException):
            raise info
        out[worker] = info
    return out


class ClusterInfo:
    """The pool's questions about its cluster (a base class of ``Pool``)."""

    session: Session

    def who_has(self, seq: Iterable[Any] | None = None) -> dict[str, set[Address]]:
        """``{key: {worker address}}`` from the center, for ``seq`` or every key.

        For handles in ``seq`` it also counts the worker their task ran on, which
        the center may learn some tens of milliseconds after the task's reply.

        >>> pool.who_has(pool.scatter([1]))                    # doctest: +ELLIPSIS
        {'data-...': {('127.0.0.1', ...)}}
        """
        return self.session.sync(data.who_has(self.session, seq))

    async def awho_has(self, seq: Iterable[Any] | None = None) -> dict[str, set[Address]]:
        """Async form of :meth:`who_has`."""
        return await self.session.run(data.who_has(self.session, seq))

    def has_what(self) -> dict[Address, set[str]]:
        """``{worker address: {key}}`` from the center."""
        return self.session.sync(self.session.center("has_what"))

    async def ahas_what(self) -> dict[Address, set[str]]:
        """Async form of :meth:`has_what`."""
        return await self.session.run(self.session.center("has_what"))

    def get_versions(self) -> dict[str, Any]:
        """What this client, the center and each worker run: ``{"client": {"python",
        "distributed3", "cloudpickle", "numpy"}, "center": {...}, "workers": {worker:
        {...}}}``.  A worker on another Python (major.minor) is not used; other
        differences are logged as warnings.

        >>> pool.get_versions()["client"]["python"] == pool.get_versions()["center"]["python"]
        True
        """
        return self.session.versions

    def worker_deaths(self) -> list[dict[str, Any]]:
        """The last worker deaths the workers' nannies reported to the center, oldest
        first: ``[{"address", "name", "pid", "cause", "time"}]``, where ``cause`` says
        how (``"was killed by SIGKILL (out of memory? it last used 3100 MB)"``).

        >>> pool.worker_deaths()
        []
        """
        return self.session.sync(self.session.center("deaths"))

    async def aworker_deaths(self) -> list[dict[str, Any]]:
        """Async form of :meth:`worker_deaths`."""
        return await self.session.run(self.session.center("deaths"))

    def worker_info(self) -> dict[Address, dict[str, Any]]:
        """``{worker: {"ncores", "nkeys", "nbytes", "tasks_done", "peer_bytes_in", "pid"}}``.

        ``peer_bytes_in`` counts the input bytes a worker fetched from its peers,
        which is how locality is checked: it stays 0 when tasks ran where their
        inputs were.  Memory: ``rss``, ``memory_limit``, ``managed_bytes``,
        ``spilled_bytes``, ``paused``, ``pauses``.  A worker that died since the center
        listed it is left out, and so is one that did not answer within the pool's
        ``timeout`` (a warning names it).
        """
        return self.session.sync(worker_info(self.session))

    async def aworker_info(self) -> dict[Address, dict[str, Any]]:
        """Async form of :meth:`worker_info`."""
        return await self.session.run(worker_info(self.session))

    @property
    def dashboard_link(self) -> str | None:
        """The center's web dashboard, with the token its secret calls for; None when it
        serves none (``dcenter --no-dashboard``).

        >>> pool.dashboard_link                                # doctest: +ELLIPSIS
        'http://127.0.0.1:.../status?token=...'
        """
        where = self.session.sync(self.session.center("dashboard"))
        if not where:
            return None
        host = where["host"]
        if host in ("0.0.0.0", "::", ""):  # every interface: the one we reach the center at
            host = self.session.center_address[0]
        return dashboard_link(host, where["port"], self.session.secret)
