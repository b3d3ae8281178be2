"""Bringing back data whose every copy died with its worker, and putting values on workers.

::

    recover([C])          C = f(B), B = g(A), every copy of B and C died
      who_has(B, C, A) -> center          A alive, B and C lost
      recover([B])  ->  a Batch computes B = g(A) where A is
      a Batch computes C = f(B) where B now is, under C's own options

A result of ``map``/``apply`` keeps its recipe -- what its compute message is made
of, its input handles and its call's options -- so it is recomputed, after its own
lost inputs, transitively down a chain of maps.  Scattered data has no recipe: it is
sent again from the client if the client still holds the value, else the error
names the key.  A batch whose inputs were lost calls this through
``Session.recover``; ``gather`` calls it for keys it cannot fetch.
"""
import asyncio
import logging
from collections import defaultdict

from ..exceptions import MissingDataError, WorkerLostError
from ..scheduling import spread
from .dispatch import Batch, Task
from .handles import only
from .results import Handles

logger = logging.getLogger(__name__)


async def recover(session, handles, depth=0):
    """Make every handle's key held by a live worker again; update ``handle.workers``.

    >>> (h,) = pool.scatter([1])
    >>> pool.session.sync(recover(pool.session, [h])); h.workers == pool.who_has([h])[h.key]
    True
    """
    if depth > 1000:
        raise WorkerLostError("lineage too deep to recompute")
    handles = {h.key: h for h in handles if h.status == "finished"}
    if not handles:
        return
    found = await session.center("who_has", keys=list(handles))
    lost = []
    for key, handle in handles.items():
        if found.get(key):
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
    for handle in handles:
        options = handle.recipe.options
        by_options.setdefault(id(options), (options, []))[1].append(handle)
    batches = []
    for options, group in by_options.values():
        tasks = []
        for index, handle in enumerate(group):
            handle.status = "pending"
            task = Task(Handles([handle]), handle.recipe.message(handle.key),
                        handle.recipe.inputs, index)  # fmt: skip
            task.refresh_hints()
            tasks.append(task)
        batches.append(Batch(session, tasks, "recompute", options=options.replace(progress=False)))
    try:
        await asyncio.gather(*[batch.run() for batch in batches])
    finally:
        for handle in handles:
            if handle.status == "pending":
                handle.status = "finished"  # not recomputed: it stays lost, not stuck


async def put(session, handles, values, broadcast=False):
    """Store ``values`` under the handles' keys: spread by cores, or on every worker.

    >>> from distributed3.client.handles import RemoteData
    >>> session = pool.session
    >>> handle = RemoteData(session.new_key("data"), session, status="pending")
    >>> session.sync(put(session, [handle], ["hello"])); handle.get()
    'hello'
    >>> session.release([handle.key])
    """
    groups = defaultdict(dict)
    if broadcast:
        for worker in session.cores:
            groups[worker] = {h.key: v for h, v in zip(handles, values)}
        for handle in handles:
            handle.workers = frozenset(groups)
    else:
        placement = spread(len(handles), session.cores)
        for handle, value, worker in zip(handles, values, placement):
            groups[worker][handle.key] = value
            handle.workers = only(worker)
    replies = await asyncio.gather(
        *[session.rpc(w).update_data(data=data) for w, data in groups.items()]
    )
    nbytes = {}
    for reply in replies:
        nbytes.update(reply["nbytes"])
    for handle in handles:
        handle.nbytes = nbytes.get(handle.key)
        handle.status = "finished"
