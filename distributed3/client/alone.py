"""An apply's short way: one task, no remote inputs, an idle worker -- sent at once.

A :class:`~distributed3.client.dispatch.Batch` keeps many tasks moving over many
workers: it orders the workers, probes how many are worth using, starts runners,
learns pipeline depths.  For one task with nothing to wait for, setting all that up
was most of the client's share of an ``apply(...).get()`` round trip.  So such a task
goes straight to an idle worker on its open channel, and its reply settles the
handle::

    apply(f, args) --> no handles among the arguments, an idle worker, its channel open
                   --> the compute message, sent now --> the reply (a result, or the
                       task's own error) --> the handle
    anything but a reply (the worker died, was paused or retiring; a time limit)
                   --> a Batch takes the task over with that outcome (Batch.take_over),
                       and the usual rules apply from there

Meanwhile the session counts it as a batch's task (:class:`Flight`): its worker busy
for the next call's choice, one task unfinished in the backlog an adaptive cluster
hears of, and failed, saying so, if the pool closes.  A call that does not qualify --
inputs, big keyword arguments to broadcast, ``resources``, a stateful pool, no idle
worker -- goes the long way from the start.  ``submit`` takes the short way for a call
alone in its turn of the loop (:func:`send_alone`, from :mod:`.inbox`).

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
from .feed import fail_pending
from .handles import RemoteData
from .options import DEFAULTS
from .results import Handles, Recipe, RemoteList
from .setbacks import tell
from .task import Task
from .tasks import big_constant, funcname, function_bytes, message_base, submit

__all__ = ["Flight", "apply_alone", "apply_call", "idle_channel", "run_alone", "send_alone"]

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
    found = idle_channel(session)
    if found is None:
        return None
    session.check()
    name = funcname(func)
    fbytes = function_bytes(func, name)  # not callable, not picklable: raised here too
    args, inputs = extract_keys(args, RemoteData, RemoteList)
    if inputs or (kwargs and any(big_constant(v) for v in kwargs.values())):
        return None
    # a dict of its own, as the long way's: the caller's, changed later, would be what
    # a recomputation of a lost result reads
    base, kw_inputs = message_base(session, fbytes, dict(kwargs), (), options)
    if kw_inputs:
        return None
    handle = RemoteData(session.new_key(name), session, status="pending")
    handle.recipe = recipe = Recipe(base, args, 0, options, {})  # to make it again
    session.adopt((handle.key,))
    task = Task(Handles([handle]), recipe.message(handle.key), {}, 0)
    await run_alone(Flight(session, *found), task, name, options)
    return handle


def send_alone(session, task, name):
    """On the loop: start ``task`` -- a submit's, without inputs -- by the short way, in
    the background; ``False`` (nothing done) when no worker is idle.

    >>> from distributed3.client.tasks import make_tasks
    >>> session = pool.session
    >>> for worker in session.cores:  # channels open, as after a first call to each
    ...     _ = session.sync(session.channels.get(worker))
    >>> (handle,), (task,) = session.sync(make_tasks(session, abs, [(-4,)], {}))
    >>> async def send():
    ...     return send_alone(session, task, "submit")
    >>> session.sync(send()), handle.get()
    (True, 4)
    """
    found = idle_channel(session)
    if found is None:
        return False
    # in flight from now: the next drain sees its worker busy
    asyncio.ensure_future(_in_background(Flight(session, *found), task, name))
    return True


async def _in_background(flight, task, name):
    try:
        await run_alone(flight, task, name, DEFAULTS, independent=True)
    except Exception as e:  # no one awaits this: its handle says it (the pool closed)
        fail_pending(task.results, e)


class Flight:
    """A task on its short way, as the session counts it: its worker busy, and one task
    unfinished among the session's listeners (the backlog an adaptive cluster hears of),
    until :meth:`land`; a pool that closes meanwhile fails it (``error``), as it fails
    its running batches.

    >>> flight = Flight(pool.session, *idle_channel(pool.session))
    >>> pool.session.unfinished(), pool.session.occupancy[flight.worker]
    (1, 1)
    >>> flight.land(); pool.session.unfinished(), pool.session.occupancy[flight.worker]
    (0, 0)
    """

    __slots__ = ("session", "worker", "channel", "remaining", "error")

    def __init__(self, session, worker, channel):
        self.session, self.worker, self.channel = session, worker, channel
        self.remaining, self.error = 1, None
        session.occupancy[worker] += 1
        session.listen(self)

    def add_worker(self, worker):
        """A worker joined: nothing to start here (a listener hears of each)."""

    def fail(self, error):
        self.error = error

    def land(self):
        if self.remaining:
            self.remaining = 0
            self.session.occupancy[self.worker] -= 1
            self.session.unlisten(self)


async def run_alone(flight, task, name, options, independent=False):
    """Send ``task`` on its ``flight`` (a :class:`Flight`) and settle its results from
    the reply; a batch takes it over should anything else come."""
    session, worker, channel = flight.session, flight.worker, flight.channel
    try:
        reply = await channel.call(task.msg, options.timeout)
    except asyncio.CancelledError:  # Ctrl-C: the worker drops it, if it has yet to start
        flight.land()
        asyncio.ensure_future(tell(channel, {"op": "cancel", "keys": [task.key]}))
        raise
    except Exception as e:
        flight.land()
        if flight.error is not None:  # the pool closed: its channels did
            raise flight.error from None
        # no reply: the long way takes it from here (the batch counts it meanwhile)
        batch = Batch(session, [], name, options=options, independent=independent)
        batch.take_over(worker, task, e)
        await batch.run()
        return
    flight.land()
    task.results.settle(reply, worker)
    if flight.error is not None:  # ended as the pool closed: as a batch would, it says so
        raise flight.error


def idle_channel(session):
    """``(worker, its open channel)`` for a worker with none of this pool's tasks in
    flight, each in turn; ``None`` if all have some, or its channel is not open yet
    (a first call to it connects the long way).

    >>> session = pool.session
    >>> for worker in session.cores:  # channels open, as after a first call to each
    ...     _ = session.sync(session.channels.get(worker))
    >>> worker, channel = idle_channel(session)
    >>> worker in session.cores and channel.peer == worker
    True
    """
    workers = list(session.cores)
    if not workers:
        return None
    occupancy = session.occupancy
    turn = next(_turns) % len(workers)
    for w in itertools.chain(workers[turn:], workers[:turn]):
        if not occupancy[w]:
            channel = session.channels.open.get(w)
            if channel is None or channel.closed:
                return None
            return w, channel
    return None
