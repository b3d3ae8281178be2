"""Turning ``map``/``apply``/``submit`` calls into tasks: chunks, seeds, constants sent once.

::

    pool.map(f, seq, chunksize=k, seed=s, big=model)
      |  f pickled once; big kwargs (>= 100 kB pickled) broadcast once to every worker
      |  and referenced by key, kept by workers that fetch them later
      |  one compute message per chunk of k elements, seeds derived from (s, index)
      |  elements without remote inputs: each chunk's results kept under one key,
      |    handles made when asked for (results.RemoteList)
      '- otherwise one RemoteData per element, each with its own recipe (for recomputing)
"""
import functools
import pickle
from dataclasses import dataclass

from toolz import partition_all

from .handles import RemoteData
from .dispatch import Batch, Task
from ..exceptions import DistributedError, SerializationError
from ..core.protocol import dumps, dumps_function
from .results import ChunkRecipe, OverChunk, Recipe, RemoteList, ResultGroup, task_seed
from ..keys import ELEMENT, KeyRef, extract_keys, plain_arguments
from ..utils import gc_paused

BIG_CONSTANT = 100_000  # pickled bytes above which a shared keyword argument is broadcast


@dataclass
class Options:
    """How to run a map: see :meth:`Pool.map`."""

    timeout: float = None
    retries: int = 3
    chunksize: int = 1  # None: adaptive (map's default), see adaptive_chunksize
    seed: int = None
    progress: bool = False
    stateful: dict = None  # {"name", "version"} of a stateful pool's instances
    resources: dict = None  # {"GPU": 1}: what each task needs free on its worker
    prepare: object = None  # coroutine function(worker) awaited before a worker's first task


def funcname(func):
    name = getattr(func, "__name__", type(func).__name__)
    return name.replace("<lambda>", "lambda").replace(ELEMENT, "_")  # "#" marks elements


async def broadcast_constants(pool, kwargs):
    """Replace big keyword arguments by handles to one copy on every worker."""
    out, keep = {}, []
    for name, value in kwargs.items():
        if not isinstance(value, RemoteData) and _pickled_size(value) >= BIG_CONSTANT:
            (value,) = await pool._scatter([value], broadcast=True)
            keep.append(value.key)
        out[name] = value
    return out, keep


def _pickled_size(value):
    try:
        return sum(memoryview(f).nbytes for f in dumps(value))
    except Exception:
        return 0  # it will fail, clearly, when the task is sent


async def make_tasks(pool, func, arglists, kwargs, options, grouped=False, over=None,
                     single=False):  # fmt: skip
    """``(handles in input order, tasks to run)`` for one call.

    ``grouped``: a chunked call whose elements have no remote inputs of their own
    keeps each chunk's results as one key (see :mod:`distributed3.client.results`) and
    returns a :class:`RemoteList` whose handles are made only when asked for.
    ``over``: the call maps over the results of a map (a :class:`RemoteList`, whose
    elements are the ``arglists``); then each of its chunks is mapped over where it
    is, as a chunk of its own.  ``single``: each of the ``arglists`` is a task's only
    argument, not a tuple of them (``pool.map`` over one sequence, the usual case: no
    tuple is made, sent or taken apart per element).
    """
    name = funcname(func) if options.stateful is None else options.stateful["name"]
    fbytes = None
    if options.stateful is None:
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        try:
            fbytes = dumps_function(func)
        except Exception as e:
            raise SerializationError(
                f"could not serialize function {name}: {type(e).__name__}: {e}"
            ) from e
    kwargs, keep = await broadcast_constants(pool, kwargs)
    kwargs, kw_handles = extract_keys(kwargs, RemoteData, RemoteList)
    base = {"op": "compute", "function": fbytes, "owner": pool.id}  # shared by every element
    if kwargs:
        base["kwargs"] = kwargs
    if keep:
        base["keep"] = keep
    if options.stateful is not None:
        base["stateful"] = options.stateful
    ncores = sum(pool.available_cores.values())
    for h in kw_handles.values():  # the chunks below need them finished, like any input
        if h.status == "pending":
            await h.wait()
    if grouped and all(h.status == "finished" for h in kw_handles.values()):
        # what a task of this function with these keywords took, if asked for no time limit:
        # a guess, which must not make a time limit apply to many tasks at once
        seconds = None if options.timeout else pool._task_times.get(base)
        size = options.chunksize or adaptive_chunksize(
            len(arglists if over is None else over), ncores, seconds)
        if over is not None:
            return _tasks_over(pool, name, base, over, kw_handles, options.seed, size)
        plain = _without_handles(arglists, single) if size > 1 else None
        if plain is not None:
            return _grouped_tasks(pool, name, base, plain, kw_handles, size, options.seed,
                                  single)  # fmt: skip
    if arglists is None:
        arglists = [(h,) for h in over]
    elif single:
        arglists = [(a,) for a in arglists]
    handles, recipes = [], []
    new_key = pool._new_key
    # one handle and recipe per element, none of them garbage: no collection meanwhile
    with gc_paused(len(arglists)):
        for i, args in enumerate(arglists):
            args, inputs = extract_keys(args, RemoteData, RemoteList)
            if kw_handles:
                inputs = {**inputs, **kw_handles}
            handle = RemoteData(new_key(name), pool, status="pending")
            handles.append(handle)
            if inputs:
                failed = next((h for h in inputs.values()
                               if h.status not in ("finished", "pending")), None)  # fmt: skip
                if failed is not None:  # an input failed or was deleted: so does this task
                    handle.set_error(*_input_error(failed), next(iter(failed.workers), None))
                    continue
            handle.recipe = recipe = Recipe(base, args, i, options.seed, inputs)
            recipes.append((handle, recipe))
    pool._owned.update(h.key for h in handles)  # the workers' reports tell the center
    # inputs still being computed must finish before tasks that need them are placed
    pending = {k: h for _, r in recipes for k, h in r.inputs.items() if h.status == "pending"}
    for h in pending.values():
        await h.wait()
    tasks = []
    size = options.chunksize or adaptive_chunksize(len(recipes), ncores)
    with gc_paused(len(recipes)):
        for chunk in _chunks(recipes, size):
            if len(chunk) == 1:
                handle, recipe = chunk[0]
                task = Task([handle], recipe.message(handle.key), recipe.inputs, recipe.index)
            else:
                inputs = {k: h for _, r in chunk for k, h in r.inputs.items()}
                msg = {**base, "op": "compute_chunk", "keys": [h.key for h, _ in chunk],
                       "args_list": [r.args for _, r in chunk]}  # fmt: skip
                if options.seed is not None:
                    msg["seeds"] = [r.task_seed() for _, r in chunk]
                task = Task([h for h, _ in chunk], msg, inputs, chunk[0][1].index)
            task.refresh_hints()
            tasks.append(task)
    return handles, tasks


def _without_handles(arglists, single=False):
    """``arglists`` with the handles in them swapped for ``KeyRef``, or ``None`` if any
    holds a handle (its task goes where that input lives: no shared chunks then)."""
    if plain_arguments(arglists, single):
        return arglists
    out = []
    for args in arglists:
        args, inputs = extract_keys(args, RemoteData, RemoteList)
        if inputs:
            return None
        out.append(args)
    return out


def _grouped_tasks(pool, name, base, arglists, inputs, size, seed, single=False):
    """One task per ``size`` elements, each keeping its results under one key."""
    groups, tasks = [], []
    field = "single_args" if single else "args_list"  # see Worker.compute_chunk
    with gc_paused(len(arglists) // size):
        for first in range(0, len(arglists), size):
            args = arglists[first:first + size]
            recipe = ChunkRecipe(base, args, first, seed, inputs, single)
            group = ResultGroup(pool._new_key(name), pool, recipe)
            msg = {**base, "op": "compute_chunk", "group": group.key, field: args}
            if seed is not None:
                msg["seeds"] = [task_seed(seed, first + i) for i in range(len(args))]
            task = Task(group, msg, inputs, first)
            task.refresh_hints()
            groups.append(group)
            tasks.append(task)
    pool._owned.update(g.key for g in groups)  # the workers' reports tell the center
    return RemoteList(groups), tasks


CHUNK_SECONDS = 0.002  # work per message, at least, once a function's task time is known
MAX_CHUNK = 10_000


def mapped_over(iterables):
    """The map's results that a map goes over, when it goes over just them and each of
    their chunks finished whole: it can go chunk for chunk (see :func:`make_tasks`)."""
    if len(iterables) != 1 or not isinstance(iterables[0], RemoteList):
        return None
    results = iterables[0]
    if results.spans and all(type(s) is ResultGroup and s.intact() for s in results.spans):
        return results
    return None


def _tasks_over(pool, name, base, source, inputs, seed, size):
    """Tasks of ``size`` elements of a chunk of ``source`` each: ``f`` over them, where
    they are."""
    groups, tasks = [], []
    for start, chunk in zip(source.starts, source.spans):
        for offset in range(0, chunk.size, size):
            count = min(size, chunk.size - offset)
            first = start + offset
            recipe = OverChunk(base, chunk, first, seed, inputs, offset, count)
            group = ResultGroup(pool._new_key(name), pool, recipe)
            msg = {**base, "op": "compute_chunk", "group": group.key,
                   "over": [chunk.key, offset, offset + count]}  # fmt: skip
            if seed is not None:
                msg["seeds"] = [task_seed(seed, first + i) for i in range(count)]
            task = Task(group, msg, {chunk.key: chunk, **inputs}, first)
            task.fallback = functools.partial(_element_by_element, task, recipe, inputs)
            task.refresh_hints()
            groups.append(group)
            tasks.append(task)
    pool._owned.update(g.key for g in groups)  # the workers' reports tell the center
    return RemoteList(groups), tasks


def _element_by_element(task, recipe, inputs):
    """Its source chunk is lost: the task names each element as an input of its own,
    for the pool to find or compute again one by one."""
    handles = recipe.sources()
    del task.msg["over"]
    task.msg["args_list"] = [(KeyRef(h.key),) for h in handles]
    task.inputs = {**{h.key: h for h in handles}, **inputs}


def adaptive_chunksize(ntasks, ncores, seconds=None):
    """Tasks per message when the caller did not say: 1 for small maps, else about 8 per
    core -- but, when a task is known to take ``seconds``, at least ``CHUNK_SECONDS`` of
    work per message, however many cores there are: tiny tasks spread thin over many
    workers cost more in messages than they gain.

    >>> adaptive_chunksize(10, 2), adaptive_chunksize(10_000, 2), adaptive_chunksize(10**6, 2)
    (1, 625, 10000)
    >>> adaptive_chunksize(10_000, 64), adaptive_chunksize(10_000, 64, seconds=1e-5)
    (20, 200)
    >>> adaptive_chunksize(100, 64, seconds=1e-6), adaptive_chunksize(100, 64, seconds=0.1)
    (100, 1)
    """
    ncores = max(ncores, 1)
    size = 1 if ntasks <= 32 * ncores else -(-ntasks // (8 * ncores))
    if seconds is not None:
        size = max(size, int(CHUNK_SECONDS / max(seconds, 1e-9)))
    return max(1, min(MAX_CHUNK, size, ntasks))


class TaskTimes:
    """Seconds a task took on the workers, as the chunks' replies said, per function and
    keyword arguments (a map's message ``base``): a running mean over the last few
    maps, for a bounded number of them.  Chunks whose every task failed say nothing.

    >>> times = TaskTimes()
    >>> times.note({"function": b"f"}, 0.004, 2); times.get({"function": b"f"})
    0.002
    >>> times.get({"function": b"f", "kwargs": {"n": 10**6}}) is None
    True
    """

    def __init__(self, size=256):
        self.size = size
        self.seconds = {}

    @staticmethod
    def _key(base):
        if base.get("function") is None:  # a stateful pool's instances: no function
            return None
        try:
            return pickle.dumps((base["function"], base.get("kwargs")), protocol=5)
        except Exception:
            return None

    def get(self, base):
        key = self._key(base)
        return None if key is None else self.seconds.get(key)

    def note(self, base, seconds, ntasks):
        key = self._key(base)
        if key is None or not ntasks:
            return
        mean = seconds / ntasks
        old = self.seconds.pop(key, None)
        if old is None and len(self.seconds) >= self.size:
            self.seconds.pop(next(iter(self.seconds)))  # the least recently noted
        self.seconds[key] = mean if old is None else (old + mean) / 2

    def learn(self, results):
        """Note what the chunks of a finished map took (see ``ResultGroup.seconds``)."""
        groups = [g for g in results.spans if type(g) is ResultGroup
                  and g.seconds is not None and len(g.errors) < g.size]  # fmt: skip
        if groups:
            self.note(groups[0].recipe.base, sum(g.seconds for g in groups),
                      sum(g.size for g in groups))  # fmt: skip


def _chunks(recipes, size):
    """Chunks of at most ``size`` ``(handle, recipe)`` whose inputs live on the same workers."""
    if size <= 1:
        return [[e] for e in recipes]
    groups = {}
    for element in recipes:
        inputs = element[1].inputs
        where = frozenset().union(*(h.workers for h in inputs.values())) if inputs else None
        groups.setdefault(where, []).append(element)
    return [chunk for group in groups.values() for chunk in partition_all(size, group)]


def _input_error(handle):
    if handle.status == "error":
        return handle.exception, handle.traceback
    return DistributedError(f"input {handle.key!r} was {handle.status}"), ""


def make_batch(pool, tasks, name, options, on_done=None):
    return Batch(pool, tasks, name, options.timeout, options.retries, on_done=on_done,
                 prepare=options.prepare, resources=options.resources)  # fmt: skip
