"""Moving data between the client and the workers: scatter, gather, delete, replicate.

::

    scatter(values)   --update_data------------> workers, spread by cores; keys owned
    gather(handles)   small results came with their task's reply: unpickled here;
                      the rest --get_data(keys)--> one request per holder
                      (fetch_from_holders); a key every copy of which died is
                      recomputed first (dispatch.recover)
    delete(handles)   --delete_data------------> every holder; released at the center
    replicate(h, n)   --fetch_data-------------> n holders each, copied peer to peer

Functions of a :class:`~distributed3.client.session.Session`; ``Pool`` wraps each.
A map's results (a :class:`~distributed3.client.results.RemoteList`) move a chunk
at a time where they can.
"""
import asyncio
import functools
import itertools
from collections import defaultdict

from ..exceptions import DataLostError, MissingDataError
from ..fetch import fetch_from_holders
from ..keys import extract_keys, substitute
from ..utils import gc_paused
from .recovery import put, recover
from .handles import Held, RemoteData, split_off, total_bytes
from .results import RemoteList

_MISSING = object()


async def scatter(session, seq, broadcast=False):
    """Handles to ``seq``'s values, sent to the workers (to every one with ``broadcast``).

    >>> handles = pool.session.sync(scatter(pool.session, [1, 2]))
    >>> [h.status for h in handles]
    ['finished', 'finished']
    """
    session.check()
    seq = list(seq)
    if not session.cores:
        await session.wait_for_workers(1)
    handles = [RemoteData(session.new_key("data"), session) for _ in seq]
    for handle, value in zip(handles, seq):
        handle.keep_source(value)
    await session.own([h.key for h in handles])
    await put(session, handles, seq, broadcast)
    return handles


async def gather(session, seq):
    """The values behind ``seq``: a list, tuple or dict of handles, nested to any depth,
    comes back as the same structure of values; other items pass through, a failed
    handle raises.

    >>> session = pool.session
    >>> session.sync(gather(session, [*session.sync(scatter(session, [1, 2])), "x"]))
    [1, 2, 'x']
    >>> (h,) = pool.scatter([3])
    >>> session.sync(gather(session, {"a": h, "b": (h, [h, 4])}))
    {'a': 3, 'b': (3, [3, 4])}
    """
    if isinstance(seq, RemoteList):
        values = await _gather_spans(session, seq)
        if values is not None:
            return values
    if not isinstance(seq, (list, tuple, dict)):
        seq = list(seq)  # any other iterable: a list of its items
    structure, handles = extract_keys(seq, RemoteData, RemoteList)
    pending = [h.wait() for h in handles.values() if h.status == "pending"]
    if pending:
        await asyncio.gather(*pending)
    for h in handles.values():
        if h.status == "error":
            h.raise_error()
        if h.status == "deleted":
            raise DataLostError(f"{h!r} was deleted")
    values = await values_of(session, handles)
    with gc_paused(len(handles)):
        return substitute(structure, values)


async def _gather_spans(session, results):
    """The values of a map's results, a chunk at a time: ``None`` when one has failed
    or lost elements (then :func:`gather` goes handle by handle)."""
    spans = results.spans
    for span in spans:
        if span.status == "pending":
            await span.wait()
    if not all(span.complete() for span in spans):
        return None
    inline = [span.inline_values() for span in spans]
    fetch = {h.key: h for span, values in zip(spans, inline) if values is None
             for h in span.handles()}  # fmt: skip
    got = await values_of(session, fetch) if fetch else {}
    out = []
    with gc_paused(len(results)):
        for span, values in zip(spans, inline):
            out.extend(values if values is not None else (got[h.key] for h in span.handles()))
    return out


async def values_of(session, handles):
    """``{key: value}`` for finished ``handles`` (``{key: handle}``): those that came
    with their task's reply unpickled here, a fresh copy each time; the rest fetched.

    >>> (h,) = pool.scatter([[1, 2]])
    >>> pool.session.sync(values_of(pool.session, {h.key: h})) == {h.key: [1, 2]}
    True
    """
    values = {}
    with gc_paused(len(handles)):
        for k, h in handles.items():
            value = h.local_value(_MISSING)
            if value is not _MISSING:
                values[k] = value
    if len(values) < len(handles):
        values.update(await _fetch(session, {k: h for k, h in handles.items()
                                             if k not in values}))  # fmt: skip
    return values


async def _fetch(session, handles, recomputes=3):
    """``{key: value}`` from the workers; keys whose every copy died are made again."""
    session.check()
    values = {}
    alive = set(session.cores)
    holders = {k: set(h.workers) & alive for k, h in handles.items()}
    sizes = {k: total_bytes(h.nbytes) for k, h in handles.items()}
    for attempt in range(recomputes + 1):
        got, lost = await fetch_from_holders(holders, session.rpc,
                                             functools.partial(session.center, "who_has"),
                                             nbytes=sizes)  # fmt: skip
        values.update(got)
        if not lost:
            return values
        if attempt == recomputes:  # no recomputing what would not be fetched
            break
        await recover(session, [handles[k] for k in lost])
        holders = {k: set(handles[k].workers) for k in lost}
    raise MissingDataError(
        f"could not fetch {len(lost)} keys, among them {next(iter(lost))!r}, from any "
        f"worker after recomputing them {recomputes} times"
    )


async def delete(session, seq):
    """Remove the data behind ``seq``'s handles from every worker that holds it.

    >>> handles = pool.scatter([1, 2])
    >>> pool.session.sync(delete(pool.session, handles))
    >>> [h.status for h in handles]
    ['deleted', 'deleted']
    """
    # a map's chunks go whole; an element on its own is freed with its chunk
    seq = seq.spans if isinstance(seq, RemoteList) else seq
    handles = [h for h in seq if isinstance(h, Held)]
    # also where a task just ran, and a chunk's elements held on their own
    holders = await who_has(session, handles, parts=True)
    by_worker = defaultdict(list)
    for key, workers in holders.items():
        for w in workers:
            by_worker[w].append(key)
    await asyncio.gather(  # a worker that does not answer: the release below reaches it
        *[session.rpc(w, session.timeout).delete_data(keys=ks) for w, ks in by_worker.items()],
        return_exceptions=True,
    )
    for h in handles:
        h.set_deleted()
    # and released: elements of these chunks computed again on their own may not have
    # reached the center yet; when they do, it drops them
    session.release([h.key for h in handles])
    emptied = _emptied_groups(handles)  # checked last: deletes running at once add up
    if emptied:
        await delete(session, emptied)


def _emptied_groups(handles):
    """The chunks of these element handles whose every element is deleted now: they go
    whole.

    >>> _emptied_groups([RemoteData("a", None)])
    []
    """
    groups = {id(h.group): h.group for h in handles if h.group is not None}
    return [g for g in groups.values() if g.status != "deleted" and len(g.deleted) >= g.size]


async def who_has(session, seq=None, parts=False):
    """``{key: {worker}}`` from the center, for ``seq`` (handles or keys) or every key.

    A handle also counts the worker its task ran on, which the center may learn some
    tens of milliseconds after the task's reply; a failed or deleted one is held by
    nobody, though its chunk is.  ``parts``: a chunk's elements held on their own too.

    >>> (h,) = pool.scatter([1])
    >>> pool.session.sync(who_has(pool.session, [h]))[h.key] == h.workers
    True
    """
    seq = None if seq is None else list(seq)
    keys = None if seq is None else [h.key if isinstance(h, Held) else h for h in seq]
    own = split_off(h for h in seq or () if isinstance(h, Held))
    found = await session.center("who_has", keys=keys, parts=parts, own=own)
    for h in seq or ():
        if not isinstance(h, Held):
            continue
        if h.status == "finished":  # where a task just ran, if its report is on its way
            found[h.key] = set(found.get(h.key, ())) | (h.workers & set(session.cores))
        elif h.status in ("error", "deleted"):
            found[h.key] = set()
    return found


async def replicate(session, seq, n=2):
    """Copy each handle's data peer to peer until at least ``n`` workers hold it.

    >>> (h,) = pool.scatter([1])
    >>> pool.session.sync(replicate(pool.session, [h], n=2)); len(h.workers)
    2
    """
    session.check()
    alive = set(session.cores)
    if isinstance(seq, RemoteList):  # a map's chunks are copied whole where they can be
        seq = [h for s in seq.spans
               for h in ([s] if s.intact() and s.workers & alive else s.handles())]  # fmt: skip
    handles = {h.key: h for h in seq if isinstance(h, Held) and h.status == "finished"}
    for h in handles.values():
        h.workers = h.workers & alive
    # a handle whose task ran on a live worker is there, whether or not the center
    # has its report yet; the others are found (or made again) through the center
    await recover(session, [h for h in handles.values() if not h.workers])
    plan = _copies(handles, sorted(session.cores, key=lambda w: -session.cores[w]), n)
    await asyncio.gather(*[session.rpc(w).fetch_data(who_has=wh) for w, wh in plan.items()])
    for target, wh in plan.items():
        for key in wh:
            handle = handles[key]
            handle.workers = handle.workers | {target}
            for element in handle.made():
                element.workers = handle.workers


def _copies(handles, workers, n):
    """``{target worker: {key: [holders]}}``: the copies to make, round the workers.

    >>> class H:
    ...     def __init__(self, *ws): self.workers = set(ws)
    >>> _copies({"x": H("alice"), "y": H("bob")}, ["alice", "bob", "carol"], 2)
    {'bob': {'x': ['alice']}, 'carol': {'y': ['bob']}}
    """
    plan = defaultdict(dict)
    turn = itertools.count()
    for key, handle in handles.items():
        holders = set(handle.workers)
        candidates = [w for w in workers if w not in holders]
        need = max(0, min(n, len(workers)) - len(holders))
        start = next(turn)
        for i in range(need):
            plan[candidates[(start + i) % len(candidates)]][key] = list(holders)
    return dict(plan)
