"""Tiny tasks that a batch keeps in flight on a worker anyway, sent a few to a message.

A batch of one task per message (``submit`` in a loop, ``imap``, ``map(...,
chunksize=1)``) keeps up to ``cores * depth`` of them in flight on a worker once
replies show they are tiny (see :func:`~distributed3.scheduling.pipeline_depth`):
64 no-op tasks a core wait there, each its own message, reply, dispatch and thread
hand-over.  A :class:`Bundles` batch sends the same tasks to the same worker in fewer
messages instead: when a runner sends a task, the compatible tasks queued right behind
it (the same call: function, keyword arguments and options; no remote inputs) go with
it, up to ``BUNDLE``, in one ``compute_chunk`` message whose results stay under their
own keys.  What each task is does not change:

* its own handle, key, result, error and seed, as when it went alone;
* how many tasks are in flight on a worker: ``cores * depth``, in fewer messages;
* a worker that dies under a bundle: each of its tasks is a task that was in flight
  there (retried, or blamed, one by one);
* a bundle the worker could not take at all (an argument it could not unpickle, one
  the client could not pickle): its tasks go again one by one, so that only the bad
  one fails.

Tasks that are not tiny (a depth below ``2 * MESSAGES``), that a batch runs carefully
(after a death), with a time limit, resources or a stateful pool's set-up, or that
already killed a worker, go one to a message as before.

::

    runner: task --> _bundle(): + the joinable tasks behind it --> bundle_message()
    worker: compute_chunk(keys=[...], budget=BUNDLE_SECONDS) --> {"nbytes": [...], ...,
            "ran": n if it stopped early}
    runner: split_reply() --> each task's results settle; those past "ran" queue again
"""
import asyncio
import logging

from ..exceptions import (CommClosedError, ConnectionBrokenError, TaskGivenBackError,
                          WorkerPausedError, WorkerRetiringError)  # fmt: skip

__all__ = ["Bundles", "BUNDLE", "MESSAGES", "joinable", "bundle_message", "split_reply"]

BUNDLE = 16  # tasks in one message, at most
MESSAGES = 4  # messages in flight per core, about, once tasks bundle
# s a bundle runs, past which its worker starts none of the rest: they come back unrun
BUNDLE_SECONDS = 0.01
# a message's own fields: the rest (function, kwargs, owner, ...) is the call's
_OWN = frozenset({"key", "args", "seed"})
_SAME = (bytes, str, int, float, bool, type(None))
# what befalls a bundle's worker, not its tasks: each task meets it as if it went alone
# (a paused one's refusal too, which _bundle_setback takes first: one rest for all)
_WORKERS_FATE = (ConnectionBrokenError, CommClosedError, WorkerRetiringError,
                 TaskGivenBackError)  # fmt: skip

logger = logging.getLogger(__name__)


def joinable(first, msg):
    """Whether the task message ``msg`` is of the same call as ``first``, so that both
    can go in one message: the same fields, each the same object or an equal plain
    value (function bytes, owner), and an ``op`` of ``compute`` with no inputs.

    >>> first = {"op": "compute", "function": b"f", "owner": "c", "key": "a", "args": (1,)}
    >>> joinable(first, {**first, "key": "b", "args": (2,)})
    True
    >>> joinable(first, {**first, "function": b"g"}), joinable(first, {**first, "seed": 1})
    (False, False)
    """
    if len(msg) != len(first) or msg.get("op") != "compute" or "who_has" in msg:
        return False
    for field, value in first.items():
        if field in _OWN:
            if field not in msg:
                return False
            continue
        other = msg.get(field, joinable)
        if other is not value and not (type(value) in _SAME and type(other) is type(value)
                                       and other == value) and not (
                type(value) is dict and not value and other == {}):  # fmt: skip
            return False
    return True


def bundle_message(msgs):
    """One ``compute_chunk`` message that runs the lone task messages ``msgs`` (all
    :func:`joinable` with the first), each result kept under its task's key.

    >>> first = {"op": "compute", "function": b"f", "key": "a", "args": (1,), "seed": 7}
    >>> msg = bundle_message([first, {**first, "key": "b", "args": (2,), "seed": 8}])
    >>> msg["op"], msg["keys"], msg["args_list"], msg["seeds"], "key" in msg
    ('compute_chunk', ['a', 'b'], [(1,), (2,)], [7, 8], False)
    """
    first = msgs[0]
    out = {field: value for field, value in first.items() if field not in _OWN}
    out["op"] = "compute_chunk"
    out["keys"] = [m["key"] for m in msgs]
    out["args_list"] = [m["args"] for m in msgs]
    if "seed" in first:
        out["seeds"] = [m["seed"] for m in msgs]
    out["budget"] = BUNDLE_SECONDS
    return out


def split_reply(reply, n):
    """The ``compute_chunk`` reply of the ``n`` tasks of a bundle that ran, as ``n``
    replies of one element each (what each task's results settle from); each reports
    its share of the run time.

    >>> reply = {"nbytes": [28, None], "pickled": [b"x", None], "duration": 0.002,
    ...          "errors": {1: {"exception": ValueError("no"), "traceback": ""}}}
    >>> parts = split_reply(reply, 2)
    >>> [p["nbytes"] for p in parts], [list(p["errors"]) for p in parts], parts[0]["duration"]
    ([[28], [None]], [[], [0]], 0.001)
    >>> split_reply({"nbytes": [], "pickled": [], "errors": {}, "duration": 0.0, "ran": 0}, 0)
    []
    """
    errors, nbytes, pickled = reply["errors"], reply["nbytes"], reply["pickled"]
    each = reply.get("duration")
    each = None if each is None or not n else each / n
    return [{"nbytes": [nbytes[i]], "pickled": [pickled[i]], "duration": each,
             "errors": {0: errors[i]} if i in errors else {}} for i in range(n)]  # fmt: skip


class Bundles:
    """Mixed into :class:`~distributed3.client.dispatch.Batch`: which tasks go together
    (see :mod:`.bundle`), and what their reply or failure means for each.  The batch
    provides ``free``, ``depth``, ``careful``, ``_slots`` and what :meth:`_setback`
    and :meth:`_replied` need."""

    def _init_bundles(self):
        options = self.options
        self.bundling = (not self.need and options.timeout is None
                         and options.prepare is None)  # fmt: skip
        self.bundles_out = {}  # first task of a bundle in flight -> (its worker, tasks)

    def _bundle_size(self, worker, slots):
        """How many tasks a message to ``worker`` carries at most: its ``slots`` over
        about ``MESSAGES`` messages a core, up to ``BUNDLE``; 1 while they do not bundle.

        Tasks of 0.25 ms or more (a depth of 8 a core or less) go one to a message."""
        if not self.bundling or self.careful:
            return 1
        cores = self.session.cores.get(worker, 0)
        return max(1, min(BUNDLE, slots // max(MESSAGES * cores, 1)))

    def _messages(self, worker):
        """How many messages of this batch ``worker`` may have in flight: its slots
        (tasks), or fewer carrying several tasks each once they bundle."""
        slots = self._slots(worker)
        return -(-slots // self._bundle_size(worker, slots))

    def _bundle(self, worker, task):
        """``task`` and the tasks queued behind it that go in its message to ``worker``
        (taken from the queue): ``[task]`` when it goes alone."""
        free = self.free
        # runners yet to send tasks taken before those queued: none may go ahead of them
        if not free or self.starting or not self._lone(task):
            return [task]
        size = self._bundle_size(worker, self._slots(worker))
        tasks, first = [task], task.msg
        while free and len(tasks) < size:
            other = free[0]
            if not self._lone(other) or not joinable(first, other.msg):
                break
            tasks.append(free.popleft())
        return tasks

    def _bundle_out(self, worker, tasks):
        """The message of the bundle ``tasks``, in flight on ``worker`` from now.  The
        list is the bundle's: a cut shortens it in place (see :meth:`_cut`)."""
        self.bundles_out[tasks[0]] = (worker, tasks)
        return bundle_message([task.msg for task in tasks])

    def _cut_bundles(self, workers):
        """The bundles running on ``workers`` stop after the task each runs: the rest
        come back unrun for the first free core, as the tasks queued behind them there
        are given back (see :meth:`~.dispatch.Batch._shallow`)."""
        for worker, tasks in list(self.bundles_out.values()):
            channel = self.session.channels.open.get(worker)
            if worker in workers and channel is not None and not channel.closed:
                asyncio.ensure_future(self._cut(worker, tasks, channel))

    async def _cut(self, worker, tasks, channel):
        """Have ``worker`` start none of the bundle ``tasks`` past the one it runs, and
        queue those again at once, not when the running one ends (its reply is for the
        tasks before the cut only)."""
        try:
            stop = await channel.call({"op": "split", "key": tasks[0].key, "rest": True})
        except Exception as e:  # it died or left: its tasks come back by other ways
            logger.debug("Could not cut the bundle of %s: %s", tasks[0].key, e)
            return
        out = self.bundles_out.get(tasks[0])
        if stop is None or out is None or out[1] is not tasks or not 0 < stop < len(tasks):
            return  # answered meanwhile, or the thread moved on: its reply says how far
        back = tasks[stop:]
        del tasks[stop:]
        for task in back:
            self.in_flight.pop(task, None)
            self.sent_at.pop(task, None)
        self.session.occupancy[worker] -= len(back)
        self._requeue(back)

    def _requeue(self, tasks):
        """``tasks`` of a bundle did not run: first in the queue, each to go alone (its
        worker could not take them together; or they came after a long task, and may
        be long too); failed at once if the batch failed meanwhile."""
        for task in tasks:
            task.alone = True
        self.free.extendleft(reversed(tasks))
        if self.error is not None:  # failed meanwhile: they fail as the queued did
            self.fail(self.error)
        else:
            self._offer(set())

    def _lone(self, task):
        """Whether ``task`` may join a bundle: a lone call, no inputs, never failed."""
        return (task.msg.get("op") == "compute" and not task.inputs and not task.deaths
                and not task.alone and "stateful" not in task.msg)  # fmt: skip

    def _bundle_setback(self, worker, tasks, error):
        """The bundle ``tasks`` sent to ``worker`` ended in ``error``: a worker's fate
        is each task's; anything else (the worker could not take the message) sends its
        tasks again one by one.  ``False`` when ``worker`` may take no more tasks."""
        if isinstance(error, WorkerPausedError):  # one rest for it; the tasks, in order,
            self.free.extendleft(reversed(tasks[1:]))  # first in the queue
            return self._setback(worker, tasks[0], error)
        if isinstance(error, _WORKERS_FATE):
            ok = [self._setback(worker, task, error) for task in tasks]
            return all(ok)
        self._requeue(tasks)
        return True

    def _bundle_replied(self, worker, tasks, reply):
        """Settle each task of a bundle from its part of the reply; what the run time
        says is learned once, for one task's share."""
        ran = reply.get("ran", len(tasks))  # the rest did not run (a budget, a cut)
        parts = split_reply(reply, ran)
        for task, part in zip(tasks, parts):
            task.results.settle(part, worker)
            self._finished_one(task)
        if ran < len(tasks):
            self._requeue(tasks[ran:])
        if self.remaining and parts:
            self._learn(worker, parts[0], tasks[0])
