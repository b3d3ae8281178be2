"""Bringing back data whose every copy died with its worker, and putting values on workers.

::

    recover([C])          C = f(B), B = g(A), every copy of B and C died
      who_has(B, C, A) -> center          A alive, B and C lost
      recover([B])  ->  a Batch computes B = g(A) where A is
      a Batch computes C = f(B) where B now is, under C's own options

A result of ``map``/``apply`` (or of a graph's task, also once ``released`` on the
workers because no task needed it any more) keeps its recipe -- what its compute message is made
of, its input handles and its call's options -- so it is recomputed, after its own
lost inputs, transitively down a chain of maps.  Scattered data has no recipe: it is
sent again from the client if the client still holds the value, else the error
names the key.  A batch whose inputs were lost calls this through
``Session.recover``; ``gather`` calls it for keys it cannot fetch.
"""
import asyncio
import logging
from collections import defaultdict

from ..exceptions import CommClosedError, ConnectionBrokenError, MissingDataError, WorkerLostError
from ..scheduling import spread
from ..utils import format_address
from .dispatch import Batch
from .handles import only, split_off
from .results import Handles
from .task import Task

logger = logging.getLogger(__name__)


async def recover(session, handles, depth=0):
    """Make every handle's key held by a live worker again; update ``handle.workers``.

    >>> (h,) = pool.scatter([1])
    >>> pool.session.sync(recover(pool.session, [h])); h.workers == pool.who_has([h])[h.key]
    True
    """
    if depth > 1000:
        raise WorkerLostError("lineage too deep to recompute")
    handles = {h.key: h for h in handles if h.status in ("finished", "released")}
    if not handles:
        return
    found = await session.center("who_has", keys=list(handles),
                                 own=split_off(handles.values()))  # fmt: skip
    lost = []
    for key, handle in handles.items():
        if found.get(key) and handle.status == "finished":
            handle.workers = frozenset(found[key])
        else:
            lost.append(handle)
    if not lost:
        return
    logger.info("Recovering %d lost keys", len(lost))
    await _send_again(session, [h for h in lost if h.recipe is None])
    computed = [h for h in lost if h.recipe is not None]
    if computed:
        inputs = {k: i for h in computed for k, i in h.recipe.inputs.items()}
        await recover(session, list(inputs.values()), depth + 1)
        await _compute_again(session, computed)


async def _send_again(session, scattered):
    """Scatter again the values the client still holds; else name what is gone."""
    if not scattered:
        return
    held = [(h, h.held_source()) for h in scattered]
    gone = [h.key for h, value in held if value is None]
    if gone:
        raise MissingDataError(
            f"the only copy of scattered data {gone[0]!r}"
            + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
            + " died with its worker, and this client no longer holds the value; "
            "scatter it again"
        )
    await put(session, [h for h, _ in held], [value[0] for _, value in held])


async def _compute_again(session, handles):
    """Run each handle's recipe again, a batch per set of options they were made under,
    all at once."""
    by_options = {}  # id -> (options, handles): an options record may hold a dict
    await session.own([h.key for h in handles])  # released ones (a graph's inputs) too
    for handle in handles:
        options = handle.recipe.options
        by_options.setdefault(id(options), (options, []))[1].append(handle)
    batches = []
    for options, group in by_options.values():
        tasks = []
        for index, handle in enumerate(group):
            handle.status = "pending"
            msg = handle.recipe.message(handle.key)
            msg.pop("values_only", None)  # kept this time: it is wanted from a worker
            task = Task(Handles([handle]), msg, handle.recipe.inputs, index)
            task.refresh_hints()
            tasks.append(task)
        batches.append(Batch(session, tasks, "recompute", options=options.replace(progress=False)))
    try:
        await asyncio.gather(*[batch.run() for batch in batches])
    finally:
        for handle in handles:
            if handle.status == "pending":
                handle.status = "finished"  # not recomputed: it stays lost, not stuck


PUT_ATTEMPTS = 3  # rounds of placing values, each without the workers that failed before


async def put(session, handles, values, broadcast=False):
    """Store ``values`` under the handles' keys: spread by cores, or on every worker.

    A worker that cannot be reached (it died, and the pool has not heard yet) is left
    out and its share goes to the others; with ``broadcast``, the workers reached are
    enough.

    >>> from distributed3.client.handles import RemoteData
    >>> session = pool.session
    >>> handle = RemoteData(session.new_key("data"), session, status="pending")
    >>> session.sync(put(session, [handle], ["hello"])); handle.get()
    'hello'
    >>> session.release([handle.key])
    """
    pending, failed = list(zip(handles, values)), {}
    for _ in range(PUT_ATTEMPTS):
        cores = {w: n for w, n in session.cores.items() if w not in failed}
        if not cores:
            break
        if broadcast:
            groups = {w: list(pending) for w in cores}
        else:
            groups = defaultdict(list)
            for item, worker in zip(pending, spread(len(pending), cores)):
                groups[worker].append(item)
        stored = await _put_groups(session, groups, failed)
        if broadcast and stored:
            return _finished(pending, stored)
        _finished([item for w in stored for item in groups[w]], stored)
        pending = [item for w, items in groups.items() if w not in stored for item in items]
        if not pending:
            return
    why = "; ".join(f"{format_address(w)}: {e}" for w, e in failed.items()) or "none is known"
    n = len(pending)
    raise WorkerLostError(f"could not put {n} value{'s' * (n != 1)} on any worker ({why})")


async def _put_groups(session, groups, failed):
    """``{worker: {key: nbytes}}`` for the groups stored; the workers that could not be
    reached go into ``failed`` (with why)."""
    workers = list(groups)
    replies = await asyncio.gather(
        *[session.rpc(w).update_data(data={h.key: v for h, v in groups[w]}, owner=session.id)
          for w in workers],
        return_exceptions=True,
    )
    stored = {}
    for worker, reply in zip(workers, replies):
        if isinstance(reply, (ConnectionBrokenError, CommClosedError, OSError)):
            logger.info("Could not put values on %s: %s", format_address(worker), reply)
            failed[worker] = reply
        elif isinstance(reply, BaseException):
            raise reply
        else:
            stored[worker] = reply["nbytes"]
    return stored


def _finished(items, stored):
    """Mark the handles of ``items`` finished where ``stored`` says they now are."""
    for handle, _ in items:
        holders = [w for w, nbytes in stored.items() if handle.key in nbytes]
        handle.workers = only(holders[0]) if len(holders) == 1 else frozenset(holders)
        handle.nbytes = stored[holders[0]][handle.key] if holders else None
        handle.status = "finished"
