"""What a :class:`~distributed3.client.dispatch.Batch` does when something goes wrong.

A worker that cannot be reached, that dies under a task (the task goes elsewhere, at
most ``retries`` times, then fails naming the cause its nanny gave), that is paused
near its memory limit (it rests, then gets tasks again), a task that failed on its
worker or could not be sent, a call that timed out or was interrupted (the workers
are told to drop what they still queue), no worker left to run the tasks on (it waits
for one to join), inputs lost with their worker (they are made again).

Mixed into ``Batch``, which provides ``session``, ``options``, ``name``, ``free``,
``lost``, ``resting``, ``in_flight`` and the rest of its state.

>>> sorted(m for m in vars(Setbacks) if not m.startswith("__"))[:3]
['_cancel_in_flight', '_fail', '_give_up']
"""
import asyncio
import logging
from collections import defaultdict

from ..exceptions import (CommClosedError, ConnectionBrokenError, SerializationError,
                          TaskGivenBackError, WorkerLostError, WorkerPausedError,
                          WorkerRetiringError)  # fmt: skip
from ..utils import format_address, wait_for

CAUSE_WAIT = 0.5  # seconds a failing task waits for word of why its last worker died
REST = 0.25  # seconds a worker that turned a task away, paused, gets none of the batch
PAUSED_WARN = 10  # seconds of tasks turned away with none ending, past which the log says so
LOST_GRACE = 1.0  # seconds to wait for a live worker before trying lost ones again

logger = logging.getLogger(__name__)


async def tell(channel, msg):
    """Send ``msg`` on ``channel``, for what it is worth: a worker that is gone (or went
    meanwhile) has nothing left to cancel."""
    try:
        await channel.call(msg)
    except Exception as e:  # the worker is gone, or went meanwhile: nothing to cancel
        logger.debug("Could not send %s: %s", msg.get("op"), e)


class Setbacks:
    """A batch's handling of unreachable, dead and paused workers and of failed tasks."""

    def _cancel_in_flight(self, workers=None, give_back=False):
        """Ask the workers (all, or those in ``workers``) to drop the tasks of this batch
        they still queue; with ``give_back``, to answer them so, for other cores to run."""
        by_worker = defaultdict(list)
        for task, worker in self.in_flight.items():
            if workers is not None and worker not in workers:
                continue
            msg = task.msg
            by_worker[worker].extend(msg["keys"] if "keys" in msg else
                                     [msg.get("key") or msg.get("group")])  # fmt: skip
        for worker, keys in by_worker.items():
            channel = self.session.channels.open.get(worker)
            if channel is not None and not channel.closed:
                msg = {"op": "cancel", "keys": keys, "give_back": give_back}
                asyncio.ensure_future(tell(channel, msg))

    def _setback(self, worker, task, error):
        """What ``task``, sent to ``worker``, ending in ``error`` instead of a reply
        means (see :mod:`.setbacks`); ``False`` when ``worker`` may take no more tasks
        of this batch."""
        if isinstance(error, (ConnectionBrokenError, CommClosedError)):
            if self.session.status == "running":  # else the pool closed it: no one to blame
                self._worker_died(worker, task, error)
            return False
        if isinstance(error, WorkerRetiringError):  # not the task's fault: elsewhere
            self.lost.add(worker)
            self.free.append(task)
            return False
        if isinstance(error, TaskGivenBackError):  # unrun, as asked (see _shallow): the
            if self.error is None:  # first free core takes it
                self._offer({self._place(task)})
            else:  # the batch failed meanwhile: as fail() drops what is queued
                self.remaining -= 1
            return True
        if isinstance(error, WorkerPausedError):  # elsewhere, or here again after a rest
            self._paused(worker, task, error)
            return False
        if isinstance(error, WorkerLostError):  # the worker could not find the inputs
            logger.info("Inputs of %s lost: %s", task.key, error)
            self.stalled.append(task)
            return True
        self._task_failed(worker, task, error)
        return True

    def take_over(self, worker, task, error):
        """Take on ``task``, which was sent to ``worker`` outside this batch and ended
        in ``error`` instead of a reply (see :mod:`.alone`): :meth:`run` goes on with it
        as with any task of its own that met the same."""
        self.remaining += 1
        self._setback(worker, task, error)

    def _paused(self, worker, task, error):
        """``worker`` is paused near its memory limit and turned ``task`` away: the task
        goes to another worker, and this one gets none of the batch for ``REST`` s."""
        logger.debug("%s", error)
        self.free.appendleft(task)
        self.resting.add(worker)
        loop = asyncio.get_running_loop()
        loop.call_later(REST, self._rested, worker)
        self._warn_if_stuck(loop.time(), error)

    def _warn_if_stuck(self, now, error):
        """Say so, once, when paused workers have turned the batch's tasks away for
        ``PAUSED_WARN`` seconds and none ended meanwhile (again only after one has) --
        else the call just waits, and the why is in the workers' logs alone."""
        since = self.turned_away
        if since is None or since[1] != self.ended:  # a task ended since: count anew
            self.turned_away = (now, self.ended)
        elif since[0] is not None and now - since[0] >= PAUSED_WARN:
            self.turned_away = (None, self.ended)  # said; not again
            logger.warning(
                "%d queued task(s) of %s waited %.0f s with none ending: the workers turn "
                "them away, paused near their memory limits (%s); they run once memory "
                "falls (see Pool.worker_info()'s 'paused', 'managed_bytes' and 'rss')",
                self.queued(), self.name, now - since[0], error)  # fmt: skip

    def _rested(self, worker):
        self.resting.discard(worker)
        if self.remaining and not self.done.done():
            self.add_worker(worker)

    def _unreachable(self, worker, task, error):
        logger.info("Worker %s unreachable: %s", format_address(worker), error)
        self.lost.add(worker)
        self.free.appendleft(task)

    def _worker_died(self, worker, task, error):
        logger.info("Worker %s lost while running %s: %s",
                    format_address(worker), task.key, error)  # fmt: skip
        self.lost.add(worker)
        self.careful = True
        task.deaths += 1
        if task.deaths > self.options.retries:
            giving_up = asyncio.ensure_future(self._give_up(worker, task))
            self.giving_up.add(giving_up)  # held: the loop keeps only weak references
            giving_up.add_done_callback(self.giving_up.discard)
        else:
            self.free.append(task)

    async def _give_up(self, worker, task):
        """``task`` killed one worker too many: it fails, with why the last one died when
        its nanny says so (word that comes just after the connection broke)."""
        cause = await self.session.death_cause(worker, CAUSE_WAIT)
        why = f" ({cause})" if cause else ""
        err = WorkerLostError(
            f"{self._which(task)} was running on "
            f"{task.deaths} workers that died, the last {format_address(worker)}{why}; it "
            f"may be what killed them, so it is not retried again"
        )
        task.results.set_error(err, "", worker)
        self._finished_one(task)

    def _task_failed(self, worker, task, error):
        """``task`` could not be sent, ran too long, or could not run on ``worker``:
        the first two fail the whole call, unless its tasks are ``independent``."""
        timeout = self.options.timeout
        text = getattr(error.__cause__, "text", "")
        if isinstance(error, SerializationError):
            why = error.__cause__ if error.__cause__ is not None else error
            error, text = SerializationError(
                f"could not serialize the arguments of {self._which(task, key=False)}: "
                f"{type(why).__name__}: {why}"), ""  # fmt: skip
        elif isinstance(error, TimeoutError) and timeout is not None:
            error, text = TimeoutError(
                f"{self._which(task)} did not finish "
                f"within {timeout} s on worker {format_address(worker)}"), ""  # fmt: skip
        else:  # the worker could not run it at all: that task's failure alone
            task.results.set_error(error, text, worker)
            self._finished_one(task)
            return
        task.results.set_error(error, text, None)  # its own error, whoever waits for it:
        self._finished_one(task)  # a stream has let go of its handle (see feed.py)
        if not self.independent:
            self._fail(error)

    def _which(self, task, key=True):
        """How errors name ``task``: by its place in its call, or by its key alone when
        it is a call of its own (``independent``)."""
        if self.independent:
            return f"task {task.key!r}"
        return f"task {task.index} of {self.name}" + (f" (key {task.key!r})" if key else "")

    def _fail(self, error):
        if self.error is None:
            self.error = error

    async def _wait_for_any_worker(self):
        """Return once a worker not counted lost is there; after ``LOST_GRACE`` the
        lost ones count again, and then one may join within the session's wait."""
        session = self.session

        def over():  # failed (the pool closed), or its last task failed meanwhile (one
            return self.error is not None or not self.remaining  # that killed the last worker)

        if session.cores.keys() - self.lost or over():
            return
        try:  # the center drops a dead worker in a moment; one that rejoins has a new port
            await wait_for(lambda: session.cores.keys() - self.lost or over(), LOST_GRACE, "")
            return
        except TimeoutError:
            pass
        self.lost.clear()  # give reconnecting workers another chance
        try:  # a failed batch stops waiting, however long it may wait
            await wait_for(lambda: session.cores or over(), session.worker_wait or session.timeout,
                           "")  # fmt: skip
        except TimeoutError:
            raise WorkerLostError(
                f"no workers left to run {self.remaining} tasks of {self.name}; "
                f"waited {session.worker_wait or session.timeout} s for one to join"
            ) from None

    async def _wait_for_a_suitable_worker(self):
        """No worker can take the queued tasks (resources, paused ones): wait until
        one joins or rested, or the tasks in flight end."""
        session = self.session
        known, resting = set(session.cores), set(self.resting)
        try:
            await wait_for(
                lambda: set(session.cores) - known
                or not self.remaining
                or self.running
                or self.error is not None  # failed meanwhile (the pool closed)
                or not self.resting >= resting,  # one rested: offer it the tasks
                session.worker_wait or session.timeout,
                "",
            )
        except TimeoutError:
            what = f"none has resources {self.need}" if self.need else "none is available"
            raise WorkerLostError(
                f"no worker can run {self.remaining} tasks of {self.name}: {what} "
                f"(waited {session.worker_wait or session.timeout} s for one to join)"
            ) from None

    async def _recover_inputs(self, rounds):
        """Make the lost inputs of the ``stalled`` tasks again and queue them anew;
        fail after ``recovery_rounds`` rounds in a row with no task ending."""
        stalled, self.stalled = self.stalled, []
        for task in stalled:
            task.spread_inputs()
        if rounds > self.recovery_rounds:
            raise WorkerLostError(
                f"inputs of {len(stalled)} tasks of {self.name} were lost "
                f"{self.recovery_rounds} times over; giving up"
            )
        inputs = {k: h for task in stalled for k, h in task.inputs.items()}
        await self.session.recover(list(inputs.values()))
        for task in stalled:
            task.refresh_hints()
            self._place(task)
