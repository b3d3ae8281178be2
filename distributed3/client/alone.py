"""An apply's short way: one task, no remote inputs, an idle worker -- sent at once.

A :class:`~distributed3.client.dispatch.Batch` keeps many tasks moving over many
workers: it orders the workers, probes how many are worth using, starts runners,
learns pipeline depths.  For one task with nothing to wait for, setting all that up
was most of the client's share of an ``apply(...).get()`` round trip.  So such a task
goes straight to an idle worker on its open channel, and its reply settles the
handle::

    apply(f, args) --> no handles among the arguments, an idle worker, its channel open
                   --> the compute message, sent now --> the reply --> the handle
    anything else on the way (the worker died, was paused, retiring; a time limit;
    the task failed) --> a Batch takes the task over with that outcome
                         (Batch.take_over), and the usual rules apply from there

A call that does not qualify -- inputs, big keyword arguments to broadcast,
``resources``, a stateful pool, no idle worker -- goes the long way from the start.

>>> session = pool.session
>>> for worker in session.cores:  # channels open, as after a first call to each
...     _ = session.sync(session.channels.get(worker))
>>> session.sync(apply_alone(session, pow, (2, 10), {}, DEFAULTS)).get()
1024
>>> session.sync(apply_alone(session, pow, (pool.scatter([2])[0], 10), {}, DEFAULTS)) is None
True
"""
import asyncio
import itertools

from ..keys import extract_keys
from .dispatch import Batch
from .handles import RemoteData
from .options import DEFAULTS  # noqa: F401 -- for the doctest
from .results import Handles, Recipe, RemoteList
from .setbacks import tell
from .task import Task
from .tasks import (big_constant, funcname, function_bytes, learn_times, message_base,
                    submit)  # fmt: skip

__all__ = ["apply_alone", "apply_call"]

_turns = itertools.count()  # which idle worker an apply tries first: each in turn


async def apply_call(session, func, args, kwargs, options):
    """``pool.apply(func, args, kwargs)``: its handle, by the short way where it can.

    >>> pool.session.sync(apply_call(pool.session, abs, -3, None, DEFAULTS)).get()
    3
    """
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    handle = await apply_alone(session, func, args, kwargs or {}, options)
    if handle is None:  # inputs, resources, no idle worker: the long way
        (handle,) = await submit(session, func, [args], kwargs or {}, options=options)
    return handle


async def apply_alone(session, func, args, kwargs, options):
    """The handle of ``func(*args, **kwargs)`` (``args`` a tuple), run by the short way;
    ``None`` when the call does not qualify and must go the long way."""
    if options.resources or options.stateful is not None:
        return None
    worker = idle_worker(session)
    channel = None if worker is None else session.channels.open.get(worker)
    if channel is None or channel.closed:
        return None  # a first call to it connects the long way
    session.check()
    name = funcname(func)
    fbytes = function_bytes(func, name)  # not callable, not picklable: raised here too
    args, inputs = extract_keys(args, RemoteData, RemoteList)
    if inputs or any(big_constant(v) for v in kwargs.values()):
        return None
    base, kw_inputs = message_base(session, fbytes, kwargs, (), options)
    if kw_inputs:
        return None
    handle = RemoteData(session.new_key(name), session, status="pending")
    handle.recipe = recipe = Recipe(base, args, 0, options, {})  # to make it again
    session.adopt((handle.key,))
    task = Task(Handles([handle]), recipe.message(handle.key), {}, 0)
    session.occupancy[worker] += 1
    try:
        reply = await channel.call(task.msg, options.timeout)
    except asyncio.CancelledError:  # Ctrl-C: the worker drops it, if it has yet to start
        asyncio.ensure_future(tell(channel, {"op": "cancel", "keys": [handle.key]}))
        raise
    except Exception as e:  # no reply: the long way takes it from here
        await _take_over(session, worker, task, name, options, e)
        return handle
    finally:
        session.occupancy[worker] -= 1
    task.results.settle(reply, worker)
    learn_times(session.task_times, RemoteList([handle]), reply.get("duration"))
    return handle


def idle_worker(session):
    """A worker with none of this pool's tasks in flight, each in turn; ``None`` if all
    have some.

    >>> idle_worker(pool.session) in pool.session.cores
    True
    """
    workers = list(session.cores)
    if not workers:
        return None
    occupancy = session.occupancy
    turn = next(_turns) % len(workers)
    for w in itertools.chain(workers[turn:], workers[:turn]):
        if not occupancy[w]:
            return w
    return None


async def _take_over(session, worker, task, name, options, error):
    """A batch goes on with ``task``, which met ``error`` on ``worker``."""
    batch = Batch(session, [], name, options=options)
    batch.take_over(worker, task, error)
    await batch.run()
    learn_times(session.task_times, RemoteList(task.results), batch.task_seconds)

