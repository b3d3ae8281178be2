"""Bringing back data whose every copy died with its worker.

A result of ``map``/``apply`` keeps its recipe -- what its compute message is
made of, and its input handles -- so it is recomputed, after its own lost
inputs, transitively down a chain of maps.  Scattered data has no recipe: it is sent again from
the client if the client still holds the value, else the error names the key.

::

    recover([C])          C = f(B), B = g(A), every copy of B and C died
      who_has(B, C, A) -> center          A alive, B and C lost
      recover([B])  ->  compute B = g(A) where A is
      compute C = f(B) where B now is
"""
import logging

from .dispatch import Batch, Task
from ..exceptions import WorkerLostError

logger = logging.getLogger(__name__)


async def recover(pool, handles, depth=0):
    """Make every handle's key held by a live worker again; update ``handle.workers``."""
    if depth > 1000:
        raise WorkerLostError("lineage too deep to recompute")
    handles = {h.key: h for h in handles if h.status == "finished"}
    if not handles:
        return
    found = await pool._center("who_has", keys=list(handles))
    lost = []
    for key, handle in handles.items():
        if found.get(key):
            handle.workers = frozenset(found[key])
        else:
            lost.append(handle)
    if not lost:
        return
    logger.info("Recovering %d lost keys", len(lost))
    scattered = [h for h in lost if h.recipe is None]
    if scattered:
        held = [(h, h.held_source()) for h in scattered]
        gone = [h.key for h, value in held if value is None]
        if gone:
            raise WorkerLostError(
                f"the only copy of scattered data {gone[0]!r}"
                + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
                + " died with its worker, and this client no longer holds the value; "
                "scatter it again"
            )
        await pool._put([h for h, _ in held], [value[0] for _, value in held])
    computed = [h for h in lost if h.recipe is not None]
    if computed:
        inputs = {k: i for h in computed for k, i in h.recipe.inputs.items()}
        await recover(pool, list(inputs.values()), depth + 1)
        tasks = []
        for index, handle in enumerate(computed):
            handle.status = "pending"
            task = Task([handle], handle.recipe.message(handle.key), handle.recipe.inputs, index)
            task.refresh_hints()
            tasks.append(task)
        try:
            await Batch(pool, tasks, "recompute").run()
        finally:
            for handle in computed:
                if handle.status == "pending":
                    handle.status = "finished"  # not recomputed: it stays lost, not stuck
