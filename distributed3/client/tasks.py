"""Turning ``map``/``apply``/``submit`` calls into tasks, and running them.

::

    pool.map(f, seq, chunksize=k, seed=s, big=model)
      |  f pickled once; big kwargs (>= 100 kB pickled) broadcast once to every worker
      |  and referenced by key, kept by workers that fetch them later
      |  one compute message per chunk of k elements, seeds derived from (s, index)
      |  elements without remote inputs: each chunk's results kept under one key,
      |    handles made when asked for (results.RemoteList)
      |  otherwise one RemoteData per element, each with its own recipe (for recomputing)
      '- submit(): a dispatch.Batch runs them; a progress bar; task times learned

Every function here takes the :class:`~distributed3.client.session.Session` and the
call's :class:`~distributed3.client.options.Options`, by keyword.
"""
import asyncio
import functools

from toolz import partition_all

from ..core.protocol import dumps, dumps_function
from ..exceptions import DataLostError, SerializationError
from ..keys import ELEMENT, KeyRef, extract_keys, numeric_array, plain_arguments
from ..scheduling import adaptive_chunksize
from ..utils import gc_paused
from .data import delete, scatter
from .dispatch import Batch
from .feed import fail_pending
from .handles import RemoteData, check_cluster
from .options import DEFAULTS, Options  # noqa: F401 -- Options for the doctests
from .progress import progress_bar
from .results import ChunkRecipe, Handles, OverChunk, Recipe, RemoteList, ResultGroup, task_seed
from .task import Task

BIG_CONSTANT = 100_000  # pickled bytes above which a shared keyword argument is broadcast


def funcname(func):
    """The name a task's keys and messages carry for ``func``.

    >>> funcname(lambda x: x), funcname(len)
    ('lambda', 'len')
    """
    name = getattr(func, "__name__", type(func).__name__)
    return name.replace("<lambda>", "lambda").replace(ELEMENT, "_")  # "#" marks elements


def call_name(func, options):
    """The name of a call's tasks: its function's, or its stateful pool's.

    >>> call_name(len, DEFAULTS), call_name(None, Options(stateful={"name": "Model-1"}))
    ('len', 'Model-1')
    """
    return funcname(func) if options.stateful is None else options.stateful["name"]


async def submit(session, func, arglists, kwargs, *, options=DEFAULTS, wait=True,
                 on_done=None, grouped=False, over=None, single=False, start=0,
                 feed=None):  # fmt: skip
    """Make and run the tasks of one call: a :class:`RemoteList` of their results.

    With ``wait=False`` they run in the background: in a batch of their own, or in the
    one that ``feed`` (a :class:`~distributed3.client.feed.Feed`, whose ``on_done`` is
    used) has running.  ``on_done`` is called with each task's results as it ends.
    ``grouped``, ``over``, ``single``, ``start``: see :func:`make_tasks`.  If the call
    fails, what it had finished is deleted.

    >>> results = pool.session.sync(submit(pool.session, abs, [(-1,), (-2,)], {}))
    >>> pool.gather(results)
    [1, 2]
    """
    session.check()
    grouped = grouped and wait and on_done is None  # the others need every handle
    handles, tasks = await make_tasks(session, func, arglists, kwargs, options=options,
                                      grouped=grouped, over=over, single=single,
                                      start=start)  # fmt: skip
    if feed is not None:
        _on_done(handles, None, feed.on_done)  # told of those that failed already
        feed.add(tasks, handles)
        return handles
    name = call_name(func, options)
    bar = progress_bar(len(handles), name) if options.progress else None
    batch = Batch(session, tasks, name, options=options, on_done=_on_done(handles, bar, on_done))
    if not wait:
        asyncio.ensure_future(_in_background(batch, handles, bar))
        return handles
    try:
        if tasks:
            await batch.run()
        learn_times(session.task_times, handles, batch.task_seconds)
    except BaseException:
        finished = [h for t in tasks for h in t.results.finished()]
        if finished and session.status == "running":
            await delete(session, finished)
        raise
    finally:
        if bar is not None:
            bar.close()
    return handles


async def map_call(session, func, iterables, kwargs, options=DEFAULTS):
    """``pool.map(func, *iterables, **kwargs)``: its :class:`RemoteList`, once every task
    has finished.  A map over a map's results alone goes chunk for chunk, a map over a
    numeric array in slices of it.

    >>> pool.gather(pool.session.sync(map_call(pool.session, pow, [[2, 3], [2, 2]], {})))
    [4, 9]
    """
    if not iterables:
        raise TypeError("map() needs at least one iterable")
    over = mapped_over(iterables)  # a map over a map's results goes chunk for chunk
    arglists = None
    single = len(iterables) == 1  # f(x) for x in one sequence: no tuple per element
    if over is None and single and numeric_array(iterables[0]):
        arglists = iterables[0]  # its chunks go as slices of it, each one buffer
    elif over is None:
        # the handles of a RemoteList passed in are made here, none of them garbage
        with gc_paused(sum(len(it) for it in iterables if isinstance(it, RemoteList))):
            arglists = list(iterables[0]) if single else list(zip(*iterables))
    return await submit(session, func, arglists, kwargs, options=options, grouped=True,
                        over=over, single=single)  # fmt: skip


def _on_done(handles, bar, on_done):
    """What the batch calls as each task ends: the bar, then the caller's ``on_done``,
    told at once of the tasks that failed before they ran (an input had failed)."""
    if bar is None and on_done is None:
        return None

    def done(finished):
        if bar is not None:
            bar.update(getattr(finished, "head", None) or len(finished))  # a chunk's own
        if on_done is not None:
            on_done(finished)

    early = [h for span in handles.spans for h in span.made() if h.status != "pending"]
    if early:
        done(early)
    return done


async def _in_background(batch, handles, bar):
    try:
        if batch.remaining:
            await batch.run()
    except Exception as e:  # the error belongs to the handles nobody awaits here
        fail_pending(handles, e, batch.on_done)
    finally:
        if bar is not None:
            bar.close()


def learn_times(times, results, seconds=None):
    """Note in ``times`` (a :class:`~distributed3.scheduling.TaskTimes`) what the
    chunks of a finished map took, as their replies said (chunks whose every task
    failed say nothing); a map of one task per message notes ``seconds``, what its
    batch measured a task to take.

    >>> from distributed3.scheduling import TaskTimes
    >>> times = TaskTimes()
    >>> one_each = pool.map(abs, range(3), chunksize=1)
    >>> learn_times(times, one_each); times.seconds  # nothing measured
    {}
    >>> learn_times(times, one_each, 1e-6); list(times.seconds.values())
    [1e-06]
    """
    chunks = [g for g in results.spans if g.seconds is not None and len(g.errors) < g.head]
    if chunks:
        times.note(chunks[0].recipe.base, sum(g.seconds for g in chunks),
                   sum(g.head for g in chunks))  # fmt: skip
    elif seconds is not None and results.spans and results.spans[0].recipe is not None:
        times.note(results.spans[0].recipe.base, seconds, 1)



async def make_tasks(session, func, arglists, kwargs, *, options=DEFAULTS, grouped=False,
                     over=None, single=False, start=0, handles=None):  # fmt: skip
    """``(RemoteList of the results in input order, tasks to run)`` for one call.

    ``grouped``: a chunked call whose elements have no remote inputs of their own
    keeps each chunk's results as one key (see :mod:`distributed3.client.results`),
    whose handles are made only when asked for.  ``over``: the call maps over the
    results of a map (a :class:`RemoteList`, whose elements are the ``arglists``); then
    each of its chunks is mapped over where it is, as a chunk of its own.  ``single``:
    each of the ``arglists`` is a task's only argument, not a tuple of them
    (``pool.map`` over one sequence, the usual case: no tuple is made, sent or taken
    apart per element).  ``start``: the position of the first of the ``arglists`` in
    the call, for seeds (a stream makes its tasks a window at a time).  ``handles``:
    the results' handles, made already (a submit's, see :mod:`.inbox`), one per element.

    >>> results, tasks = pool.session.sync(make_tasks(pool.session, abs, range(1000), {},
    ...                                               grouped=True, single=True))
    >>> len(results), len(tasks) == len(results.spans) < 100
    (1000, True)
    """
    name = call_name(func, options)
    base, kw_handles = await _base_message(session, func, name, kwargs, options)
    for h in kw_handles.values():  # the chunks below need them finished, like any input
        if h.status == "pending":
            await h.wait()
    if grouped and all(h.status == "finished" for h in kw_handles.values()):
        made = _chunked_tasks(session, name, base, arglists, kw_handles, options, over, single)
        if made is not None:
            return made
    if arglists is None:
        arglists = [(h,) for h in over]
    elif single:
        arglists = [(a,) for a in arglists]
    handles, recipes = element_recipes(session, name, base, arglists, kw_handles, options,
                                        start, handles)  # fmt: skip
    session.adopt(h.key for h in handles)  # the workers' reports tell the center
    # inputs still being computed must finish before tasks that need them are placed;
    # an element whose input failed meanwhile fails as it did
    waited = pending_inputs(recipes)
    for h in waited:
        await h.wait()
    if waited:
        recipes = [(h, r) for h, r in recipes if not fail_on_inputs(h, r.inputs)]
    size = options.chunksize or adaptive_chunksize(len(recipes), sum(session.cores.values()))
    return RemoteList(handles), element_tasks(base, recipes, size, options)


def pending_inputs(recipes):
    """The inputs of ``(handle, recipe)`` pairs that are still being computed.

    >>> pending_inputs([])
    []
    """
    pending = {k: h for _, r in recipes for k, h in r.inputs.items() if h.status == "pending"}
    return list(pending.values())


def function_bytes(func, name):
    """``func`` pickled for its tasks; ``TypeError`` or ``SerializationError``, naming
    it, when it cannot be.

    >>> function_bytes(None, "None")
    Traceback (most recent call last):
    TypeError: None is not callable
    """
    if not callable(func):
        raise TypeError(f"{func!r} is not callable")
    try:
        return dumps_function(func)
    except Exception as e:
        raise SerializationError(
            f"could not serialize function {name}: {type(e).__name__}: {e}"
        ) from e


async def _base_message(session, func, name, kwargs, options):
    """``(the part of the compute message every task shares, {key: kwarg handle})``."""
    fbytes = function_bytes(func, name) if options.stateful is None else None
    kwargs, keep = await broadcast_constants(session, kwargs)
    return message_base(session, fbytes, kwargs, keep, options)


def message_base(session, fbytes, kwargs, keep=(), options=DEFAULTS):
    """The part of the compute message every task of a call shares, and the handles
    among its keyword arguments, ``{key: handle}``; ``keep``: the keys of the big ones
    broadcast (see :func:`broadcast_constants`).

    >>> message_base(pool.session, b"f", {"n": 1})[0]["kwargs"]
    {'n': 1}
    """
    base = {"op": "compute", "function": fbytes, "owner": session.id}
    kw_handles = {}
    if kwargs:
        kwargs, kw_handles = extract_keys(kwargs, RemoteData, RemoteList)
        check_cluster(session, kw_handles.values())
        base["kwargs"] = kwargs
    if keep:
        base["keep"] = keep
    if options.stateful is not None:
        base["stateful"] = options.stateful
    if options.values_only:
        base["values_only"] = True
    return base, kw_handles


async def broadcast_constants(session, kwargs):
    """Replace big keyword arguments by handles to one copy on every worker.

    >>> pool.session.sync(broadcast_constants(pool.session, {"n": 3}))
    ({'n': 3}, [])
    """
    out, keep = {}, []
    for name, value in kwargs.items():
        if big_constant(value):
            (value,) = await scatter(session, [value], broadcast=True)
            keep.append(value.key)
        out[name] = value
    return out, keep


def big_constant(value):
    """Whether keyword argument ``value`` is big enough to be broadcast once, rather
    than sent in every task's message.

    >>> big_constant(1), big_constant(bytes(BIG_CONSTANT))
    (False, True)
    """
    return not isinstance(value, RemoteData) and _pickled_size(value) >= BIG_CONSTANT


def _pickled_size(value):
    try:
        return sum(memoryview(f).nbytes for f in dumps(value))
    except Exception:
        return 0  # it will fail, clearly, when the task is sent


def _chunked_tasks(session, name, base, arglists, inputs, options, over, single):
    """Tasks that keep a chunk's results under one key each, or ``None`` when the
    elements have remote inputs of their own (or go one per message)."""
    # what a task of this function with these keywords took, if asked for no time limit:
    # a guess, which must not make a time limit apply to many tasks at once
    seconds = None if options.timeout else session.task_times.get(base)
    ntasks = len(arglists if over is None else over)
    size = options.chunksize or adaptive_chunksize(ntasks, sum(session.cores.values()), seconds)
    if over is not None:
        return _tasks_over(session, name, base, over, inputs, options, size)
    plain = _without_handles(arglists, single) if size > 1 else None
    if plain is None:
        return None
    return _grouped_tasks(session, name, base, plain, inputs, size, options, single)


def element_recipes(session, name, base, arglists, kw_handles, options, start=0, made=None):
    """A handle (or the next of those ``made``) and a recipe per element; an element
    whose input failed fails too."""
    handles, recipes = [], []
    # one handle and recipe per element, none of them garbage: no collection meanwhile
    with gc_paused(len(arglists)):
        for i, args in enumerate(arglists, start):
            args, inputs = extract_keys(args, RemoteData, RemoteList)
            check_cluster(session, inputs.values())
            if kw_handles:
                inputs = {**inputs, **kw_handles}
            if made is None:
                handle = RemoteData(session.new_key(name), session, status="pending")
            else:
                handle = made[i - start]
            handles.append(handle)
            if inputs and fail_on_inputs(handle, inputs):
                continue
            handle.recipe = recipe = Recipe(base, args, i, options, inputs)
            recipes.append((handle, recipe))
    return handles, recipes


def element_tasks(base, recipes, size, options):
    """One task per ``size`` elements whose inputs live on the same workers."""
    tasks = []
    with gc_paused(len(recipes)):
        for chunk in _chunks(recipes, size):
            if len(chunk) == 1:
                handle, recipe = chunk[0]
                task = Task(Handles([handle]), recipe.message(handle.key), recipe.inputs,
                            recipe.index)  # fmt: skip
            else:
                inputs = {k: h for _, r in chunk for k, h in r.inputs.items()}
                msg = {**base, "op": "compute_chunk", "keys": [h.key for h, _ in chunk],
                       "args_list": [r.args for _, r in chunk]}  # fmt: skip
                if options.seed is not None:
                    msg["seeds"] = [r.task_seed() for _, r in chunk]
                task = Task(Handles([h for h, _ in chunk]), msg, inputs, chunk[0][1].index)
            task.refresh_hints()
            tasks.append(task)
    return tasks


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


def _grouped_tasks(session, name, base, arglists, inputs, size, options, single=False):
    """Tasks of at most ``size`` elements, as even as can be (a short last chunk would
    leave a core idle at the end), each keeping its results under one key."""
    groups, tasks = [], []
    field = "single_args" if single else "args_list"  # see Worker.compute_chunk
    n = len(arglists)
    nchunks = -(-n // size)  # as many chunks as of `size`, but even: sizes differ by 1 at most,
    each, longer = divmod(n, nchunks)  # the longer ones first, so that they spread
    with gc_paused(nchunks):
        for c in range(nchunks):
            first = c * each + min(c, longer)
            args = arglists[first:first + each + (c < longer)]
            recipe = ChunkRecipe(base, args, first, options, inputs, single)
            group = ResultGroup(session.new_key(name), session, recipe)
            msg = {**base, "op": "compute_chunk", "group": group.key, field: args}
            if options.seed is not None:
                msg["seeds"] = [task_seed(options.seed, first + i) for i in range(len(args))]
            task = Task(group, msg, inputs, first)
            task.refresh_hints()
            groups.append(group)
            tasks.append(task)
    session.adopt(g.key for g in groups)  # the workers' reports tell the center
    return RemoteList(groups), tasks


def mapped_over(iterables):
    """The map's results that a map goes over, when it goes over just them and each of
    their chunks finished whole: it can go chunk for chunk (see :func:`make_tasks`).

    >>> mapped_over([[1, 2]]) is None, mapped_over([pool.map(abs, range(100))]) is not None
    (True, True)
    """
    if len(iterables) != 1 or not isinstance(iterables[0], RemoteList):
        return None
    results = iterables[0]
    if results.spans and all(s.keeps_parts and s.intact() for s in results.spans):
        return results
    return None


def _tasks_over(session, name, base, source, inputs, options, size):
    """Tasks of ``size`` elements of a chunk of ``source`` each: ``f`` over them, where
    they are."""
    groups, tasks = [], []
    for start, chunk in zip(source.starts, source.spans):
        for offset in range(0, chunk.size, size):
            count = min(size, chunk.size - offset)
            first = start + offset
            recipe = OverChunk(base, chunk, first, options, inputs, offset, count)
            group = ResultGroup(session.new_key(name), session, recipe)
            msg = {**base, "op": "compute_chunk", "group": group.key,
                   "over": [chunk.key, offset, offset + count]}  # fmt: skip
            if options.seed is not None:
                msg["seeds"] = [task_seed(options.seed, first + i) for i in range(count)]
            task = Task(group, msg, {chunk.key: chunk, **inputs}, first)
            task.fallback = functools.partial(_element_by_element, source=chunk, inputs=inputs)
            task.refresh_hints()
            groups.append(group)
            tasks.append(task)
    session.adopt(g.key for g in groups)  # the workers' reports tell the center
    return RemoteList(groups), tasks


def _element_by_element(task, source, inputs):
    """The chunk of ``source`` that ``task`` maps over is lost: the task names each of
    its elements as an input of its own, for the pool to find or compute again one by one."""
    _, start, stop = task.msg.pop("over")
    handles = [source.handle(i) for i in range(start, stop)]
    task.msg["args_list"] = [(KeyRef(h.key),) for h in handles]
    task.inputs = {**{h.key: h for h in handles}, **inputs}


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


def fail_on_inputs(handle, inputs):
    """Fail ``handle`` if one of its ``inputs`` failed or was deleted; whether it did.

    >>> h = RemoteData("k", None, status="pending")
    >>> fail_on_inputs(h, {"x": RemoteData("x", None, status="deleted")}), h.status
    (True, 'error')
    """
    failed = next((h for h in inputs.values() if h.status not in ("finished", "pending")),
                  None)  # fmt: skip
    if failed is None:
        return False
    handle.set_error(*input_error(failed), next(iter(failed.workers), None))
    return True


def input_error(handle):
    """``(exception, traceback)`` for a task whose input ``handle`` failed or is gone.

    >>> from distributed3.client.handles import RemoteData
    >>> input_error(RemoteData("k", None, status="deleted"))
    (DataLostError("input 'k' was deleted"), '')
    """
    if handle.status == "error":
        return handle.exception, handle.traceback
    return DataLostError(f"input {handle.key!r} was {handle.status}"), ""
