"""Running a task graph on the cluster: each task where its inputs are, intermediate
results never passing through the client, and released once nothing needs them.

::

    pool.get(dsk, keys)          dask.compute(x, scheduler=pool.get)
      |  parse -> Graph (distributed3.graph), culled to what ``keys`` need,
      |  priorities from dask.order (branches finish before new ones start)
      |  ready tasks, by priority, fed to one dispatch.Batch as its queue runs low:
      |    placed where most of their input bytes are, tiny ones pipelined
      |  a task ends: its dependents may become ready; an input nobody else reads is
      |    released on the workers (its handle keeps the recipe: should data made from
      |    it be lost, recovery computes it again -- lineage)
      '- the keys' handles: gathered and released (get), or handed back (compute, persist)

A node runs on a worker as :func:`distributed3.graph.run_node`; a ``RemoteData`` inside
a graph is a reference to data on the cluster, sent as its key, never by value.
"""
import asyncio
import heapq
import itertools
import logging
from collections import defaultdict

from toolz import partition_all

from ..core.protocol import dumps_function
from ..graph import dumps_with_handles, find_handles, parse, run_node
from ..keys import ELEMENT, extract_keys
from ..scheduling import PROBE_CORES, graph_chunksize, root_window
from ..utils import format_address
from .dispatch import Batch
from .handles import RemoteData, check_cluster
from .tasks import input_error
from .options import DEFAULTS
from .results import Handles, Recipe
from .task import Task


logger = logging.getLogger(__name__)

_USABLE = frozenset({"finished", "pending", "released"})  # statuses an input may have


class _Failed(Exception):
    """A task of the graph raised: stop feeding, re-raise its own error."""


def key_name(key):
    """The name a graph key's data carries on the cluster: its prefix, without dask's
    token.

    >>> key_name(("sum-aggregate-9f86d081884c7d659a2feaa0c55ad015", 0)), key_name("inc-1")
    ('sum-aggregate', 'inc-1')
    >>> key_name(7)
    '7'
    """
    name = str(key[0] if type(key) is tuple and key else key)
    head, _, tail = name.rpartition("-")
    if head and len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail):
        name = head
    return name.replace(ELEMENT, "_")[:60] or "task"


class GraphRun:
    """One graph on the cluster: ``await GraphRun(session, dsk, keys).run()`` is
    ``{key: RemoteData}`` for ``keys``; every other result it made is released.

    >>> from operator import add
    >>> run = GraphRun(pool.session, {"x": 1, "y": (add, "x", 10)}, ["y"])
    >>> pool.session.sync(run.run())["y"].get()
    11
    """

    def __init__(self, session, dsk, keys, options=DEFAULTS):
        self.session = session
        self.options = options.replace(progress=False)
        self.wanted = set(keys)
        graph = parse(dsk, RemoteData)
        missing = [k for k in self.wanted if k not in graph.nodes]
        if missing:
            raise KeyError(f"the graph has no key {missing[0]!r}")
        self.graph = graph = graph.cull(self.wanted)
        self.handles = dict(graph.given)  # key -> RemoteData, made or given
        self.embedded = {}  # key -> {key: RemoteData} that its node holds by value
        for key, node in graph.nodes.items():
            found = {}
            find_handles(node, RemoteData, found)
            if found:
                self.embedded[key] = found
        check_cluster(session, [*graph.given.values(),
                                *(h for found in self.embedded.values() for h in found.values())])
        self.key_of = {}  # our key -> graph key
        self.base = {"op": "compute", "function": _RUN_NODE, "owner": session.id}
        deps = graph.dependencies
        self.dependents = graph.dependents()
        self.readers = {k: len(v) for k, v in self.dependents.items()}
        self.waiting = {k: sum(d not in graph.given for d in deps[k])
                        for k in graph.nodes if k not in graph.given}  # fmt: skip
        self.priority = graph.order()
        self.counter = itertools.count()
        self.ready = []  # heap of (priority, n, key) of tasks whose inputs are made
        # tasks that read nothing the graph makes: they start a few at a time, so the
        # data they make is read, and released, before more of it is made
        self.roots = [(self.priority[k], next(self.counter), k)
                      for k, n in self.waiting.items() if not n]  # fmt: skip
        heapq.heapify(self.roots)
        self.root_keys = {k for _, _, k in self.roots}
        self.roots_running = 0
        self.root_nbytes = None  # a running mean of what a root's result takes
        self.batch = None
        self.failed = None
        self.to_release = []

    async def run(self):
        """Compute what the keys need; ``{key: RemoteData}`` for the keys."""
        session = self.session
        given = [*self.graph.given.values(), *(h for e in self.embedded.values()
                                               for h in e.values())]  # fmt: skip
        for handle in given:  # handles still being computed: their tasks must end first
            if handle.status == "pending":
                await handle.wait()
        if self.roots:
            if not session.cores:
                await session.wait_for_workers(1)
            # two a core of the few a batch probes with: the rest when it knows whether
            # its tasks are tiny (a few workers, several a message) or long (all)
            first = self._pop(2 * min(max(sum(session.cores.values()), 1), PROBE_CORES))
            self.batch = Batch(session, first, "graph", options=self.options,
                               on_done=self._done, on_room=self._refill)  # fmt: skip
            try:
                if self.failed is None:
                    await self.batch.run()
            except _Failed:
                pass
            except BaseException:
                self._release_all()
                raise
        if self.failed is not None:
            self._release_all()
            self.failed.raise_error()
        self._flush()
        return {k: self.handles[k] for k in self.wanted}

    def _push(self, key):
        heapq.heappush(self.ready, (self.priority[key], next(self.counter), key))

    def _pop(self, n, size=1):
        """Tasks for up to ``n`` ready keys, first in priority, roots within their
        window (:func:`~distributed3.scheduling.root_window`); ``size`` to a message
        among those whose inputs live on the same workers."""
        keys = []
        while self.ready and len(keys) < n:
            keys.append(heapq.heappop(self.ready)[2])
        if self.roots and len(keys) < n:  # the window sums all cores: only while roots wait
            room = root_window(sum(self.session.cores.values()), self.root_nbytes)
            while self.roots and len(keys) < n and self.roots_running < room:
                keys.append(heapq.heappop(self.roots)[2])
                self.roots_running += 1
        elements = [e for e in map(self._element, keys) if e is not None]
        if size <= 1:
            return [self._lone(handle, recipe) for handle, recipe in elements]
        groups = {}
        for element in elements:
            inputs = element[1].inputs
            where = frozenset().union(*(h.workers for h in inputs.values())) if inputs else None
            groups.setdefault(where, []).append(element)
        tasks = []
        for group in groups.values():
            for chunk in partition_all(size, group):
                if len(chunk) == 1:
                    tasks.append(self._lone(*chunk[0]))
                    continue
                inputs = {k: h for _, r in chunk for k, h in r.inputs.items()}
                msg = {**self.base, "op": "compute_chunk", "keys": [h.key for h, _ in chunk],
                       "args_list": [r.args for _, r in chunk]}  # fmt: skip
                task = Task(Handles([h for h, _ in chunk]), msg, inputs, chunk[0][1].index)
                task.refresh_hints()
                tasks.append(task)
        return tasks

    def _element(self, key):
        """``(handle, recipe)`` of the task that computes ``key``."""
        node = self.graph.nodes[key]
        values = {d: self.handles[d] for d in self.graph.dependencies[key]}
        embedded = self.embedded.get(key)
        if embedded:  # data on the cluster that the node names by value: sent as keys
            args = (dumps_with_handles(node, RemoteData), {**values, **embedded}, True)
        else:
            args = (node, values)
        args, inputs = extract_keys(args, RemoteData)
        handle = RemoteData(self.session.new_key(key_name(key)), self.session, status="pending")
        self.handles[key] = handle
        self.key_of[handle.key] = key
        gone = next((h for h in inputs.values() if h.status not in _USABLE), None)
        if gone is not None:  # given data that was deleted, or failed: so does this task
            handle.set_error(*input_error(gone))
            self.failed = self.failed or handle
            return None
        self.session.adopt((handle.key,))
        handle.recipe = Recipe(self.base, args, self.priority[key], self.options, inputs)
        return handle, handle.recipe

    @staticmethod
    def _lone(handle, recipe):
        task = Task(Handles([handle]), recipe.message(handle.key), recipe.inputs, recipe.index)
        task.refresh_hints()
        return task

    def _done(self, results):
        """A task ended: release what no task will read again, queue what is ready."""
        for handle in results:
            key = self.key_of[handle.key]
            if key in self.root_keys:
                self._root_done(handle)
            if self.failed is not None:  # ended after the graph failed: not needed
                self._release(key)
                continue
            if handle.status != "finished":
                if self.failed is None:
                    self.failed = handle
                    self.batch.fail(_Failed())
                continue
            for dep in self.graph.dependencies[key]:
                self.readers[dep] -= 1
                if not self.readers[dep] and dep not in self.wanted:
                    self._release(dep)
            for dependent in self.dependents[key]:
                self.waiting[dependent] -= 1
                if not self.waiting[dependent]:
                    self._push(dependent)
        self._refill()
        self._flush()  # the session sends the releases of a few ms together

    def _refill(self):
        """Give the batch as many ready tasks as its workers have room for."""
        if self.failed is None and (self.ready or self.roots):
            batch = self.batch
            room = batch.capacity() - batch.queued()
            if room > 0:
                size = graph_chunksize(batch.task_seconds)
                batch.add(self._pop(room * size, size))
                if self.failed is not None:
                    batch.fail(_Failed())

    def _root_done(self, handle):
        self.roots_running -= 1
        nbytes = handle.nbytes
        if type(nbytes) is int:
            old = self.root_nbytes
            self.root_nbytes = nbytes if old is None else 0.9 * old + 0.1 * nbytes

    def _release(self, key):
        if key in self.graph.given:
            return
        handle = self.handles[key]
        if handle.status == "finished":
            handle.status = "released"  # its recipe stays, for lineage
            self.to_release.append(handle)

    def _flush(self):
        """Release the keys let go: dropped at once where their task ran (the center
        hears of a result only with its worker's next report), and at the center, which
        drops the copies that others fetched."""
        if not self.to_release:
            return
        handles, self.to_release = self.to_release, []
        by_worker = defaultdict(list)
        for handle in handles:
            for worker in handle.workers:
                by_worker[worker].append(handle.key)
        for worker, keys in by_worker.items():
            asyncio.ensure_future(_drop(self.session, worker, keys))
        self.session.release([h.key for h in handles])

    def _release_all(self):
        for key in self.handles:
            if key not in self.graph.given:
                self._release(key)
        self._flush()


_RUN_NODE = dumps_function(run_node)


async def _drop(session, worker, keys):
    try:  # on the tasks' channel: no connection of its own
        channel = await session.channels.get(worker)
        await channel.call({"op": "delete_data", "keys": keys, "report": False})
    except Exception as e:  # the center's release drops them, or they died with it
        logger.debug("Could not drop %d keys on %s: %s", len(keys), format_address(worker), e)


async def get(session, dsk, keys, options=DEFAULTS):
    """The values of ``keys`` (one key, or nested lists of them) in ``dsk``, computed on
    the cluster; what was computed is released.  See :meth:`distributed3.Pool.get`.

    >>> pool.session.sync(get(pool.session, {"a": 2, "b": (pow, "a", 10)}, ["b", "a"]))
    [1024, 2]
    """
    flat = list(_flatten(keys))
    run = GraphRun(session, dsk, flat, options)
    handles = await run.run()
    made = [h for k, h in handles.items() if k not in run.graph.given]
    try:
        values = await session.gather([handles[k] for k in flat])
    finally:
        session.release([h.key for h in made if h.status == "finished"])
        for h in made:
            if h.status == "finished":
                h.status = "released"
    lookup = dict(zip(flat, values))
    return _repack(keys, lookup)


async def compute(session, collections, options=DEFAULTS, optimize_graph=True):
    """A ``RemoteData`` per dask collection or delayed object in ``collections`` (one,
    or a list or tuple: then a list), its value left on the workers; other items pass
    through.  See :meth:`distributed3.Pool.compute`.

    >>> import dask
    >>> handle = pool.session.sync(compute(pool.session, dask.delayed(abs)(-1)))
    >>> handle.get()
    1
    """
    from dask import is_dask_collection

    many = isinstance(collections, (list, tuple))
    collections = list(collections) if many else [collections]
    variables = [c for c in collections if is_dask_collection(c)]
    handles = {}
    if variables:
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr
        from dask.core import flatten

        expr = FinalizeCompute(collections_to_expr(variables, optimize_graph)).optimize()
        names = list(flatten(expr.__dask_keys__()))
        made = await GraphRun(session, expr, names, options).run()
        handles = dict(zip(map(id, variables), (made[n] for n in names)))
    out = [handles.get(id(c), c) for c in collections]
    return out if many else out[0]


async def persist(session, collections, options=DEFAULTS, optimize_graph=True):
    """The same dask collections (one, or a list or tuple: then a list), their graphs
    now pointing at data held on the cluster; other items pass through, as with
    ``dask.persist``.  See :meth:`distributed3.Pool.persist`.
    """
    from dask import is_dask_collection
    from dask.base import collections_to_expr
    from dask.core import flatten

    many = isinstance(collections, (list, tuple))
    collections = list(collections) if many else [collections]
    variables = [c for c in collections if is_dask_collection(c)]
    persisted = {}
    if variables:
        expr = collections_to_expr(variables, optimize_graph).optimize()
        keys = expr.__dask_keys__()
        made = await GraphRun(session, expr, list(flatten(keys)), options).run()
        for collection, ks in zip(variables, keys):
            rebuild, args = collection.__dask_postpersist__()
            persisted[id(collection)] = rebuild({k: made[k] for k in flatten(ks)}, *args)
    out = [persisted.get(id(c), c) for c in collections]
    return out if many else out[0]


def _flatten(keys):
    if type(keys) is list:
        for k in keys:
            yield from _flatten(k)
    else:
        yield keys


def _repack(keys, values):
    if type(keys) is list:
        return [_repack(k, values) for k in keys]
    return values[keys]
