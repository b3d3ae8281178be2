"""The Pool's data movement and key ownership: scatter, gather, delete, replicate.

A mixin of :class:`distributed3.client.pool.Pool`.  Gathering asks for each worker's
keys in one request and brings back, through :mod:`distributed3.client.recovery`,
whatever died with its worker.  Every key the pool creates is announced to
the center as owned by this client, so it is released when the client goes.
"""
import asyncio
import itertools
import pickle
from collections import defaultdict

from .handles import RemoteData, only
from ..exceptions import CommClosedError, ConnectionBrokenError, WorkerLostError
from .recovery import recover
from .results import RemoteList, ResultGroup
from ..scheduling import split_by_worker, spread
from ..utils import gc_paused


NOTE_DELAY = 0.01  # seconds ownership notes wait to go out together


class DataMixin:
    async def _own(self, keys):
        """Tell the center, now, that we created ``keys``, so they are released if we
        vanish; releases waiting to go out travel in the same message."""
        self._owned.update(keys)
        self._notes["own"].extend(keys)
        await self._send_notes()

    def _note_release(self, keys):
        """Queue keys to release; they go out together at most every ``NOTE_DELAY``
        seconds (or sooner, with the next ``_own``), not a message per handle."""
        notes = self._notes
        if not notes["own"] and not notes["release"]:
            self.loop.call_later(NOTE_DELAY, lambda: asyncio.ensure_future(self._send_notes()))
        notes["release"].extend(keys)

    async def _send_notes(self):
        notes, self._notes = self._notes, {"own": [], "release": []}
        if notes["own"] or notes["release"]:
            if not await self._tell_center({"op": "ownership", **notes, "reply": False}):
                # the center is away: subscribing again re-owns what we hold (_owned),
                # and must release these, or they would stay on the workers
                self._unsent_releases.extend(notes["release"])

    async def _tell_center(self, msg):
        """A one-way message on the subscription; whether it went (it does not when the
        center is away; then resubscribing sends what it must)."""
        comm = self._subscription
        if comm is not None and not comm.closed:
            try:
                await comm.write(msg)
                return True
            except (CommClosedError, ConnectionBrokenError):
                pass
        return False

    def _release_soon(self, key):
        """Called from ``RemoteData.__del__``, in any thread: release ``key`` within
        ``NOTE_DELAY`` seconds -- waking the loop once for all the keys dropped by then,
        not once per handle."""
        self._to_release.append(key)
        if not self._release_due:
            self._release_due = True
            self.loop.call_soon_threadsafe(self.loop.call_later, NOTE_DELAY, self._releases_due)

    def _releases_due(self):
        self._release_due = False  # before draining: a key added after this schedules again
        asyncio.ensure_future(self._flush_releases())

    async def _flush_releases(self):
        keys = []
        while self._to_release:
            keys.append(self._to_release.popleft())
        keys = [k for k in keys if k in self._owned]
        if keys and self.status == "running":
            self._owned.difference_update(keys)
            self._note_release(keys)


    def scatter(self, seq, broadcast=False):
        """Send local values to the workers, spread by cores; list of ``RemoteData``.

        With ``broadcast=True`` every current worker gets a copy of each value.

        >>> data = pool.scatter([1, 2, 3])
        >>> pool.gather(data)
        [1, 2, 3]
        """
        return self._sync(self._scatter(seq, broadcast))

    async def ascatter(self, seq, broadcast=False):
        """Async form of :meth:`scatter`."""
        return await self._run(self._scatter(seq, broadcast))

    async def _scatter(self, seq, broadcast=False):
        seq = list(seq)
        if not self.available_cores:
            await self._wait_for_workers(1)
        handles = [RemoteData(self._new_key("data"), self) for _ in seq]
        for handle, value in zip(handles, seq):
            handle.keep_source(value)
        await self._own([h.key for h in handles])
        await self._put(handles, seq, broadcast)
        return handles

    async def _put(self, handles, values, broadcast=False):
        """Store ``values`` under the handles' keys: spread by cores, or on every worker."""
        groups = defaultdict(dict)
        if broadcast:
            for worker in self.available_cores:
                groups[worker] = {h.key: v for h, v in zip(handles, values)}
            for handle in handles:
                handle.workers = frozenset(groups)
        else:
            placement = spread(len(handles), self.available_cores)
            for handle, value, worker in zip(handles, values, placement):
                groups[worker][handle.key] = value
                handle.workers = only(worker)
        pool = self.connection_pool
        replies = await asyncio.gather(
            *[pool(w).update_data(data=data) for w, data in groups.items()]
        )
        nbytes = {}
        for reply in replies:
            nbytes.update(reply["nbytes"])
        for handle in handles:
            handle.nbytes = nbytes.get(handle.key)
            handle.status = "finished"

    def gather(self, seq):
        """The values behind a list of ``RemoteData``, one request per worker.

        Non-handle items pass through unchanged.  A handle whose task failed
        re-raises that task's exception.

        >>> pool.gather(pool.map(str, [1, 2]))
        ['1', '2']
        """
        return self._sync(self._gather(seq))

    async def agather(self, seq):
        """Async form of :meth:`gather`."""
        return await self._run(self._gather(seq))

    async def _gather(self, seq):
        if isinstance(seq, RemoteList):
            values = await self._gather_groups(seq)
            if values is not None:
                return values
        seq = list(seq)
        handles = {x.key: x for x in seq if isinstance(x, RemoteData)}
        pending = [h.wait() for h in handles.values() if h.status == "pending"]
        if pending:
            await asyncio.gather(*pending)
        for h in handles.values():
            if h.status == "error":
                h.raise_error()
            if h.status == "deleted":
                raise KeyError(f"{h!r} was deleted")
        values = await self._values(handles)
        with gc_paused(len(handles)):
            return [values[x.key] if isinstance(x, RemoteData) else x for x in seq]

    async def _gather_groups(self, results):
        """The values of a map's results, a chunk at a time: ``None`` when one has
        failed or lost elements (then :meth:`_gather` goes handle by handle)."""
        spans = results.spans
        for span in spans:
            if span.status == "pending":
                await span.wait()
        singles = {}  # handles whose values come through _values
        for span in spans:
            if type(span) is ResultGroup:
                if not span.intact():
                    return None
                if span.pickled is None:  # big results: fetched element by element
                    singles.update((h.key, h) for h in span.handles())
            elif span.status != "finished":
                return None
            else:
                singles[span.key] = span
        got = await self._values(singles) if singles else {}
        out = []
        with gc_paused(len(results)):
            for span in spans:
                if type(span) is not ResultGroup:
                    out.append(got[span.key])
                elif span.pickled is not None:
                    out.extend(pickle.loads(span.pickled))
                else:
                    out.extend(got[h.key] for h in span.handles())
        return out

    async def _values(self, handles):
        """``{key: value}`` for finished ``handles`` (``{key: handle}``).

        Small results came with their task's reply: unpickled here, a fresh copy each
        time; the others are fetched from the workers.
        """
        values = {}
        with gc_paused(len(handles)):
            for k, h in handles.items():
                if h.inline is not None:
                    values[k] = pickle.loads(h.inline)
                elif h.group is not None and h.group.pickled is not None:
                    values[k] = h.group.value(h.index)  # the chunk unpickled once a pass
        if len(values) < len(handles):
            values.update(await self._fetch({k: h for k, h in handles.items() if k not in values}))
        return values

    async def _fetch(self, handles):
        """``{key: value}`` for handles, asking the center where any copy went."""
        values = {}
        who_has = {k: set(h.workers) & set(self.available_cores) for k, h in handles.items()}
        for _attempt in range(3):
            unknown = [k for k in handles if k not in values and not who_has.get(k)]
            if unknown:
                found = await self._center("who_has", keys=unknown)
                who_has.update({k: set(v) for k, v in found.items()})
            todo = [k for k in handles if k not in values]
            lost = [k for k in todo if not who_has.get(k)]
            if lost:  # every copy died with its worker: make them again
                await recover(self, [handles[k] for k in lost])
                who_has.update({k: set(handles[k].workers) for k in lost})
            groups = split_by_worker(todo, who_has)
            results = await asyncio.gather(
                *[self.connection_pool(w).get_data(keys=keys) for w, keys in groups.items()],
                return_exceptions=True,
            )
            failed = None
            for (_worker, keys), result in zip(groups.items(), results):
                if isinstance(result, (ConnectionBrokenError, CommClosedError, WorkerLostError)):
                    failed = result
                    for k in keys:
                        who_has[k] = set()
                    continue
                if isinstance(result, BaseException):
                    raise result
                values.update(result)
            if failed is None:
                return values
        raise failed

    def delete(self, seq):
        """Remove the data behind these handles from every worker that holds it.

        >>> pool.delete(pool.scatter([1, 2]))
        """
        return self._sync(self._delete(seq))

    async def adelete(self, seq):
        """Async form of :meth:`delete`."""
        return await self._run(self._delete(seq))

    async def _delete(self, seq):
        # a map's chunks go whole; an element on its own is freed with its chunk
        seq = seq.spans if isinstance(seq, RemoteList) else seq
        handles = [h for h in seq if isinstance(h, (RemoteData, ResultGroup))]
        keys = [h.key for h in handles]
        # also where a task just ran, and a chunk's elements held on their own
        who_has = await self._who_has(handles, parts=True)
        by_worker = defaultdict(list)
        for key, workers in who_has.items():
            for w in workers:
                by_worker[w].append(key)
        await asyncio.gather(
            *[self.connection_pool(w).delete_data(keys=ks) for w, ks in by_worker.items()],
            return_exceptions=True,
        )
        for h in handles:
            if type(h) is ResultGroup:
                h.set_deleted()
            else:
                h.status = "deleted"
                h.workers = frozenset()
                if h.group is not None:
                    h.group.drop(h)
        self._owned.difference_update(keys)
        # and released: elements of these chunks computed again on their own may not have
        # reached the center yet; when they do, it drops them
        groups = [h.key for h in handles if type(h) is ResultGroup]
        if groups:
            self._note_release(groups)
        emptied = _emptied_groups(handles)  # checked last: deletes running at once add up
        if emptied:
            await self._delete(emptied)

    def replicate(self, seq, n=2):
        """Keep at least ``n`` copies of each handle's data, on different workers.

        >>> data = pool.scatter([1, 2])
        >>> pool.replicate(data, n=2)
        >>> sorted(len(ws) for ws in pool.who_has(data).values())
        [2, 2]
        """
        return self._sync(self._replicate(seq, n))

    async def areplicate(self, seq, n=2):
        """Async form of :meth:`replicate`."""
        return await self._run(self._replicate(seq, n))

    async def _replicate(self, seq, n=2):
        alive = set(self.available_cores)
        if isinstance(seq, RemoteList):  # a map's chunks are copied whole where they can be
            spans = seq.spans
            whole = {id(s) for s in spans
                     if type(s) is ResultGroup and s.intact() and s.workers & alive}  # fmt: skip
            seq = [h for s in spans for h in (
                [s] if id(s) in whole or type(s) is not ResultGroup else s.handles())]  # fmt: skip
        held = (RemoteData, ResultGroup)
        handles = {h.key: h for h in seq if isinstance(h, held) and h.status == "finished"}
        for h in handles.values():
            h.workers = h.workers & alive
        # a handle whose task ran on a live worker is there, whether or not the center
        # has its report yet; the others are found (or made again) through the center
        await recover(self, [h for h in handles.values() if not h.workers])
        workers = sorted(self.available_cores, key=lambda w: -self.available_cores[w])
        plan = defaultdict(dict)
        turn = itertools.count()
        for key, handle in handles.items():
            holders = set(handle.workers)
            candidates = [w for w in workers if w not in holders]
            need = max(0, min(n, len(workers)) - len(holders))
            start = next(turn)
            for i in range(need):
                target = candidates[(start + i) % len(candidates)]
                plan[target][key] = list(holders)
        await asyncio.gather(
            *[self.connection_pool(w).fetch_data(who_has=wh) for w, wh in plan.items()]
        )
        for target, wh in plan.items():
            for key in wh:
                handle = handles[key]
                handle.workers = handle.workers | {target}
                if type(handle) is ResultGroup:
                    for element in handle.made():
                        element.workers = handle.workers


def _emptied_groups(handles):
    """The chunks of these element handles whose every element is deleted now: they go
    whole.

    >>> _emptied_groups([RemoteData("a", None)])
    []
    """
    groups = {id(h.group): h.group for h in handles
              if type(h) is RemoteData and h.group is not None}  # fmt: skip
    return [g for g in groups.values() if g.status != "deleted" and len(g.deleted) >= g.size]
