"""Getting keys' values from whichever workers hold them: the one fetch both a worker
(its task's inputs) and a client (``gather``) use.

::

    fetch_from_holders(who_has, peers, ask_center)
      |  keys nobody is known to hold: ask_center(keys) -> {key: holders}
      |  one get_data(keys) per holder, all at once (scheduling.split_by_worker);
      |  with sizes known, a holder's keys in requests of at most BATCH_BYTES, one
      |  after the other, so that no worker loads much more than that from disk at once
      |  a holder that fails (gone, or lost the key): its keys try their other holders
      '-> ({key: value}, {keys no live holder gave})

>>> import asyncio
>>> from distributed3.center import Center
>>> from distributed3.core import ConnectionPool
>>> from distributed3.worker import Worker
>>> async def demo():
...     center = await Center().start(port=0)
...     alice = await Worker(center.address, ncores=1).start(port=0)
...     await alice.update_data(None, {"x": 1})
...     peers = ConnectionPool()
...     got = await fetch_from_holders({"x": {alice.address}, "y": set()}, peers,
...                                    peers(center.address).who_has)
...     await peers.close(); await alice.close(); await center.close()
...     return got
>>> asyncio.run(demo())
({'x': 1}, {'y'})
"""
import asyncio
import logging

from .exceptions import CommClosedError, ConnectionBrokenError, SerializationError, WorkerLostError
from .scheduling import split_by_worker
from .utils import format_address

logger = logging.getLogger(__name__)

# what a holder that cannot give its keys raises: it died, left, or no longer has them
HOLDER_FAILED = (ConnectionBrokenError, CommClosedError, WorkerLostError, OSError)
BATCH_BYTES = 16_000_000  # the most bytes asked of one holder in one request, sizes known


def batches(keys, nbytes, most=BATCH_BYTES):
    """``keys`` in lists of at most ``most`` bytes (a bigger key alone); keys of unknown
    size weigh nothing.

    >>> batches(["a", "b", "c", "d"], {"a": 20, "b": 20, "c": 50}, most=40)
    [['a', 'b'], ['c', 'd']]
    """
    out, size = [[]], 0
    for k in keys:
        n = nbytes.get(k) or 0
        if out[-1] and n and size + n > most:
            out.append([])
            size = 0
        out[-1].append(k)
        size += n
    return out


async def _get_batches(peer, keys, nbytes, worker):
    """``(values, error)``: what ``peer`` (``worker``) gave of ``keys``, a batch at a
    time, and the error that stopped it, if any."""
    values = {}
    for batch in batches(keys, nbytes) if nbytes else [keys]:
        try:
            values.update(await peer.get_data(keys=batch))
        except SerializationError as e:
            return values, await _unsendable(peer, batch, worker, e, values)
        except Exception as e:
            return values, e
    return values, None


async def _unsendable(peer, keys, worker, error, values):
    """The error naming the key among ``keys`` whose value ``worker`` cannot pickle (the
    others asked for one by one, into ``values``)."""
    bad = keys[0]
    if len(keys) > 1:
        for key in keys:
            try:
                values.update(await peer.get_data(keys=[key]))
            except SerializationError as e:
                bad, error = key, e
                break
    why = str(error).split(": ", 1)[-1]  # past "could not serialize a message for ..."
    return SerializationError(
        f"the task result {bad!r} cannot be pickled to leave worker "
        f"{format_address(worker)} ({why}); it stays there, where tasks can still use it"
    )


async def fetch_from_holders(who_has, peers, ask_center, exclude=(), attempts=3, nbytes=None):
    """``({key: value}, missing keys)`` for the keys of ``who_has`` (``{key: holders}``).

    ``peers(worker)`` is an rpc to a worker (a :class:`~distributed3.core.ConnectionPool`);
    ``ask_center(keys=...)`` returns ``{key: holders}``, and is asked for the keys with no
    holder left, at most ``attempts`` times.  A holder that fails is not asked again in
    this call, nor is one in ``exclude`` (the caller itself).  Any other error of a
    holder's (a value that cannot be sent) is raised.  ``nbytes`` (``{key: bytes}``),
    when known, splits what one holder is asked for into batches (:func:`batches`).
    """
    holders = {k: set(ws) - set(exclude) for k, ws in who_has.items()}
    values, failed, asked = {}, set(exclude), 0
    while holders:
        unknown = [k for k, ws in holders.items() if not ws]
        if unknown and asked < attempts:
            asked += 1
            found = await ask_center(keys=unknown)
            for k in unknown:
                holders[k] = set(found.get(k, ())) - failed
        todo = [k for k, ws in holders.items() if ws]
        if not todo:
            break
        groups = split_by_worker(todo, holders)
        results = await asyncio.gather(
            *[_get_batches(peers(w), keys, nbytes, w) for w, keys in groups.items()]
        )
        for (worker, keys), (result, error) in zip(groups.items(), results):
            if isinstance(error, HOLDER_FAILED):
                logger.info("Could not fetch %d keys from %s: %s",
                            len(keys) - len(result), format_address(worker), error)  # fmt: skip
                failed.add(worker)
            elif error is not None:
                raise error
            values.update(result)
            for k in keys:
                if k in result:
                    del holders[k]
                else:  # not sent after all: ask the others
                    holders[k].discard(worker)
    return values, set(holders)
