"""Feeding the tasks of one call to the workers as their slots free up.

::

    Batch.run()
      |-- pinned[worker]: tasks whose inputs that worker holds (decide_worker)
      |-- free: everything else, pulled by whichever worker has a free slot
      |-- per worker, up to ncores * depth runners (1, or up to 4 for short tasks):
      |      task = pinned[worker] or free  --compute-->  worker  --reply-->  task.results
      |-- a worker dies mid-task: the task goes back to `free` (at most `retries` times)
      '-- a task's inputs were lost: it waits in `stalled` until session.recover() has
             made them again (see :mod:`distributed3.client.recovery`), then runs again

Uses only the :class:`~distributed3.client.session.Session`'s public methods.
"""
import asyncio
import logging
from collections import defaultdict, deque

from ..exceptions import CommClosedError, ConnectionBrokenError, WorkerLostError
from ..scheduling import decide_worker, pipeline_depth, steal_choice
from .bundle import Bundles
from .crowd import Crowd, Reach
from .handles import total_bytes
from .options import DEFAULTS
from .setbacks import Setbacks
from .sharing import Sharing

logger = logging.getLogger(__name__)


class Batch(Reach, Setbacks, Sharing, Bundles):
    """The tasks of one call, fed to the workers as their slots free up.

    A task with remote inputs is pinned to the worker :func:`decide_worker`
    picks; the rest go to a shared queue that every worker pulls from, so free
    cores take work first.  A worker has one task per core in flight until its
    replies say how long tasks run; then several for short ones, to hide the round
    trip, and still one for long ones, which must not wait on a busy worker while a
    core elsewhere is free.  Workers that join mid-batch start pulling at once.
    A task whose worker dies goes back to the shared queue, up to ``retries``
    times; after that it fails, since it may be what kills them.  Once a worker
    has died, each worker gets only one task per core at a time, so a later
    death is blamed on the task that was really running.  A worker with nothing
    left to do takes tasks queued for a worker whose slots are all taken, when the
    inputs it lacks are small (``steal_bytes``): moving them costs less than waiting;
    an idle holder runs its own; a free core with nothing queued takes the elements
    that a chunk running elsewhere has not started (see :mod:`.sharing`).  A worker
    paused near its memory limit turns tasks away unrun: they go to the others, and
    it gets more after a rest.  ``options.timeout``
    bounds each task's run; ``on_done`` is called with each task's results as it ends,
    ``on_room`` when the first tasks' probe widens and more workers may take tasks.
    The tasks of one call fail together when one cannot be sent or runs too long;
    ``independent`` ones (separate submits, see :mod:`.feed`) fail alone.
    """

    slots_per_core = 64  # the most tasks in flight per core: tiny ones, see pipeline_depth
    recovery_rounds = 5
    steal_bytes = 4096  # an idle worker takes others' tasks whose inputs it lacks are this small

    def __init__(self, session, tasks, name, *, options=DEFAULTS, on_done=None, on_room=None,
                 independent=False):  # fmt: skip
        self.session = session
        self.name = name
        self.options = options
        self.independent = independent  # tasks of separate calls: one's failure is its own
        self.need = {r: float(n) for r, n in (options.resources or {}).items() if n}
        self.on_done = on_done
        self.on_room = on_room  # called when the probe widens: more workers may take tasks
        self.pinned = defaultdict(deque)
        self.free = deque()
        self.stalled = []
        self.remaining = len(tasks)
        self.runners = defaultdict(int)
        # kept as they change, so that no step of a task is O(workers) -- a pool may
        # feed a thousand: runners of all workers, pinned tasks, workers with free slots
        self.running = 0
        self.starting = 0  # runners made and yet to take their first step
        self.crowd = Crowd(session.cores if not self.need else
                           (w for w in session.cores if self._eligible(w)))  # fmt: skip
        self.probe = None  # the timer that widens the crowd's probe; False once over
        self.npinned = 0
        self.spare = set()  # workers with runners and slots free
        self._pins_checked = self._capacity = None  # (what it was computed for, value)
        self.depth_changes = 0  # for capacity(): a worker's pipeline depth changed
        self.done = asyncio.get_running_loop().create_future()
        self.error = None
        self.ended = 0  # tasks finished (or failed) so far
        self.in_flight = {}  # task -> the worker it was sent to, until its reply
        self.lost = set()
        self.resting = set()  # paused workers, offered tasks again after REST seconds
        self.turned_away = None  # (since when, tasks ended then): paused workers' refusals
        self.careful = False  # after a worker death: one task per core, so blame is exact
        self.giving_up = set()  # tasks that killed too many workers, failing (_give_up)
        self.depth = {}  # worker -> tasks in flight per core, from its tasks' run times
        self.recent = defaultdict(lambda: deque(maxlen=3))  # worker -> its last run times
        self.deep = set()  # workers that kept many in flight a core (see _shallow)
        # running means, once replies said: what one element took, and one message (a
        # chunk: all its elements) -- this batch's own, never a guess from an earlier
        # call, which a long task among short ones would make wrong
        self.task_seconds = None
        self.message_seconds = None
        self._init_sharing()
        self._init_bundles()
        for task in tasks:
            self._place(task)

    def _place(self, task):
        """Pin ``task`` to the live worker holding most of its inputs and return that
        worker; or queue it for anyone.  Costs its inputs' holders, not all workers."""
        if task.inputs:
            cores = self.session.cores
            who_has = {k: h.workers for k, h in task.inputs.items()}
            nbytes = {k: total_bytes(h.nbytes) for k, h in task.inputs.items()}
            holders = {w: cores[w] for ws in who_has.values() for w in ws
                       if w in cores and (not self.need or self._eligible(w))}  # fmt: skip
            if holders:
                # ties (inputs on several workers) go round by what this batch placed
                occupancy = self.session.occupancy
                load = {w: occupancy[w] + len(self.pinned.get(w, ())) for w in holders}
                worker = decide_worker(list(who_has), who_has, nbytes, holders, load)
                self.pinned[worker].append(task)
                self.npinned += 1
                return worker
        self.free.append(task)
        return None

    def _eligible(self, worker):
        return self.session.has_resources(worker, self.need)

    async def run(self):
        """Run every task; raise the batch's error (a timeout, an unsendable task)."""
        self.session.check()  # closed while its tasks were made: no one would fail it
        self.session.listen(self)
        rounds, ended = 0, 0  # recovery rounds since a task last ended; tasks ended
        try:
            while self.remaining:
                if self.stalled and not self.running:
                    # a round without a task ending since the last counts against
                    # the limit; one worker's death may show, task by task, in many
                    rounds, ended = (rounds + 1 if self.ended == ended else 1), self.ended
                    await self._recover_inputs(rounds)
                await self._wait_for_any_worker()  # at once if the batch failed: then,
                if self.error is not None and not self.running:  # nothing to wait for
                    raise self.error
                if await self._start_round():
                    continue
                if not self.remaining:
                    break
                if not self.queued():  # cores left without a task may share others'
                    self._share_soon()
                if self.running:
                    await asyncio.shield(self.done)
                    self.done = asyncio.get_running_loop().create_future()
                elif not self.stalled:  # no worker can take these tasks now
                    await self._wait_for_a_suitable_worker()
                if self.error is not None:
                    raise self.error
            if self.error is not None:  # failed with nothing left in flight
                raise self.error
        except asyncio.CancelledError:  # the caller was interrupted (Ctrl-C)
            self.fail(WorkerLostError(f"{self.name} was cancelled"))
            self._cancel_in_flight()
            raise
        finally:
            self.session.unlisten(self)
            for timer in (self.probe, self.sharing):
                if timer:
                    timer.cancel()

    def add(self, tasks):
        """Queue more ``tasks`` while the batch runs (a graph's tasks as they become
        ready), and start them where slots are free."""
        self.remaining += len(tasks)
        self._offer({self._place(task) for task in tasks})

    def _offer(self, holders):
        """Start queued tasks on the workers with free slots, the idle ``holders`` of
        pinned ones, and idle workers while more are worth using."""
        holders.discard(None)
        for worker in [*self.spare, *(holders & self.crowd.idle)]:
            if not self.queued():
                break
            self.add_worker(worker)
        self._widen()

    def queued(self):
        """How many tasks wait for a slot."""
        return len(self.free) + self.npinned

    def fail(self, error):
        """Stop: drop the queued tasks, let those in flight end, and have :meth:`run`
        raise ``error``.  The dropped tasks' results fail with it, and ``on_done`` hears
        of them: a stream waits for every task it sent, having let go of their handles."""
        self._fail(error)
        if self.on_done is not None:
            for task in [*self.free, *(t for q in self.pinned.values() for t in q),
                         *self.stalled]:  # fmt: skip
                if any(h.status == "pending" for h in task.results):
                    task.results.set_error(error, "", None)
                    self.on_done(task.results)
        dropped = self.queued() + len(self.stalled)
        self.free.clear()
        self.pinned.clear()
        self.npinned = 0
        self.stalled.clear()
        self.remaining -= dropped
        if not self.done.done():
            self.done.set_result(None)

    async def _start_round(self):
        """Start what the workers can take now; ``True`` when that was the only task
        (an apply), run here to its end rather than in a task of its own -- two turns
        of the loop fewer on its round trip."""
        session = self.session
        workers = self._round_order()
        self._pins_checked = None  # look again at the pinned tasks of departed workers
        # a task per core everywhere first; then the rest of each worker's slots, the
        # holders taking their own tasks before the idle take what is left
        started = [o for worker in workers
                   for o in self._openings(worker, limit=session.cores[worker])]  # fmt: skip
        if self.free or self.npinned:  # more than a task per core to start
            started += [o for _ in range(2) for worker in workers for o in self._openings(worker)]
        if len(started) == 1 and self.running == 1:
            if started[0][1].msg["op"] == "compute_chunk" and not self.queued():
                self._share_soon()  # a chunk: idle cores may take part of it
            await self._runner(*started[0])
            self.done = asyncio.get_running_loop().create_future()
            if self.error is not None:
                raise self.error
            return True  # done, or back in the queue (its worker died)
        self._start_runners(started)
        return False

    def add_worker(self, worker):
        """Start as many of the batch's tasks on ``worker`` as it may run now."""
        self._start_runners(self._openings(worker))
        runners = self.runners[worker]
        if not runners and (not self.need or self._eligible(worker)):
            self.crowd.idle.add(worker)  # one that joined, or was given nothing
        self._mark_spare(worker)

    def _start_runners(self, openings):
        """A runner for each ``(worker, task)``.  Each sends its task on its first step,
        in a later turn of the loop: until then (``starting``), the runners at work take
        no new task, which would go out first and wait on the worker ahead of tasks
        taken before it (a map's tiny tasks behind its first long one)."""
        for worker, task in openings:
            self.starting += 1
            asyncio.ensure_future(self._runner(worker, task, new=True))

    def _openings(self, worker, limit=None):
        """``[(worker, task)]`` to start on ``worker`` now, counted as running already:
        up to its slots (and ``limit``) in all."""
        cores = self.session.cores
        ncores = cores.get(worker)
        if (not ncores or worker in self.lost or worker in self.resting
                or (self.need and not self._eligible(worker))
                or (self.crowd.outside(worker) and self._crowded(worker))):  # fmt: skip
            return []
        self._unpin_departed()
        slots = self._messages(worker)
        slots = slots if limit is None else min(limit, slots)
        # its free slots, for its own pinned tasks and others' it may take
        want = min(slots - self.runners[worker], self.queued())
        out = []
        for _ in range(want):
            task = self._next(worker)  # taken now, so the next worker sees what is left
            if task is None:
                break
            self.crowd.join(worker, ncores)
            self.runners[worker] += 1
            self.running += 1
            out.append((worker, task))
        if out:  # with a slot left, it takes tasks added later (a submit, a window)
            self._mark_spare(worker)
        return out

    def _mark_spare(self, worker):
        """Keep ``spare`` what it says: the workers with runners and a slot free."""
        if 0 < self.runners[worker] < self._messages(worker):
            self.spare.add(worker)
        else:
            self.spare.discard(worker)

    def _unpin_departed(self):
        """Tasks pinned to a worker that is gone, or lost, are free for anyone: looked at
        when the membership or the lost workers changed, and once a round."""
        cores = self.session.cores
        state = (id(cores), len(cores), frozenset(self.lost))
        if not self.npinned or state == self._pins_checked:
            return
        self._pins_checked = state
        for w in [w for w in self.pinned if w not in cores or w in self.lost]:
            tasks = self.pinned.pop(w)
            self.npinned -= len(tasks)
            self.free.extend(tasks)

    def _slots(self, worker):
        """How many of this batch's tasks ``worker`` may have at once: one per core until
        its replies say how long a task takes, more for short tasks (see
        :func:`~distributed3.scheduling.pipeline_depth`)."""
        per_core = 1 if self.careful else self.depth.get(worker, 1)
        return self.session.cores.get(worker, 0) * per_core

    def _learn(self, worker, reply, task):
        """Set ``worker``'s pipeline depth from the run time its reply reports (a long
        one at once, short ones by the middle of the last three), and ``task_seconds``;
        start the runners that new slots allow."""
        duration = reply.get("duration")
        if duration is not None:
            each = duration / task.size
            old = self.task_seconds
            self.task_seconds = each if old is None else 0.8 * old + 0.2 * each
            old = self.message_seconds
            self.message_seconds = duration if old is None else 0.8 * old + 0.2 * duration
        depth = pipeline_depth(duration, self.slots_per_core)
        if depth > 1:  # of short tasks: the middle of its last three replies, so that one
            recent = self.recent[worker]  # slow a moment (a busy machine) moves nothing
            recent.append(duration)
            depth = pipeline_depth(sorted(recent)[len(recent) // 2], self.slots_per_core)
        grown = depth > self.depth.get(worker, 1)
        if self.depth.get(worker) != depth:
            self.depth[worker] = depth
            self.depth_changes += 1
        if depth > 2:  # tiny tasks, many queued (two of medium ones are left be)
            self.deep.add(worker)
        elif depth == 1 and self.deep:  # tasks run long now: none may wait behind one
            self._shallow()
        if grown:
            self.add_worker(worker)
        if self.crowd.idle:  # workers, not cores: a worker of 4 cores counts once
            self._widen()

    def _shallow(self, workers=None):
        """The workers that kept many tasks in flight (tiny ones, until now), or
        ``workers``, keep one a core, and give back those they have not started, for
        the first free core."""
        if workers is None:
            workers, self.deep = self.deep, set()
        else:
            self.deep -= workers
        for worker in workers:
            self.depth[worker] = 1
        self.depth_changes += 1
        self._cancel_in_flight(workers, give_back=True)
        self._cut_bundles(workers)

    def _next(self, worker):
        mine = self.pinned.get(worker)
        if mine:
            self.npinned -= 1
            return mine.popleft()
        if self.free:
            return self.free.popleft()
        # only from workers with every slot taken: an idle holder runs its own tasks
        busy = {w: q for w, q in self.pinned.items() if self.runners[w] >= self._messages(w)}
        owner = steal_choice(busy, lambda task: task.missing_bytes(worker), self.steal_bytes)
        if owner is None:
            return None
        task = self.pinned[owner].pop()
        self.npinned -= 1
        task.spread_inputs()  # to fetch its own elements, not their whole chunk
        return task

    async def _runner(self, worker, first, new=False):
        """Run tasks on ``worker`` one after the other, starting with ``first`` (of a
        ``new`` runner: see :meth:`_start_runners`)."""
        session = self.session  # whose `cores` is a new dict after each resubscription
        if new:
            self.starting -= 1
        waited = 0
        try:
            while self.error is None and worker in session.cores and worker not in self.lost:
                task, first = first, None
                if task is None:
                    if self.starting and waited < 3:  # their tasks were taken first: they
                        waited += 1  # send them on their first step, a turn or two away
                        await asyncio.sleep(0)  # (this turn's, if made after we yielded)
                        continue
                    waited = 0
                    if self.runners[worker] > self._messages(worker):
                        return  # fewer tasks in flight from now on
                    if self._crowded(worker, runner=True):
                        return  # tiny tasks: the other workers take all there is
                    task = self._next(worker)
                    if task is None:
                        return
                if not await self._run_one(worker, task):
                    return
        finally:
            if first is not None:  # never started: someone else may run it
                self.free.appendleft(first)
            self.runners[worker] -= 1
            self.running -= 1
            if not self.runners[worker]:
                self.crowd.leave(worker)
            self._mark_spare(worker)
            if self.remaining and not self.queued():  # a free core: others may share
                self._share_soon()
            if not self.running and not self.done.done():
                self.done.set_result(None)

    async def _run_one(self, worker, task):
        """Send ``task`` (and the tasks that go with it, see :mod:`.bundle`) to
        ``worker`` and take the reply; ``False`` when ``worker`` may take no more tasks
        of this batch."""
        session = self.session
        if self.need:
            await session.reserve(worker, self.need)
        session.occupancy[worker] += 1
        # what is in flight (a cut shortens a bundle's list), and whether it is a bundle
        tasks, bundled, cancelled = [task], False, False
        try:
            channel = session.channels.open.get(worker)  # one coroutine less than call()
            if channel is None or channel.closed:
                try:
                    channel = await session.channels.get(worker)
                except (ConnectionBrokenError, CommClosedError, OSError) as e:
                    self._unreachable(worker, task, e)  # never sent: not the task's fault
                    return False
            if self.options.prepare is not None:
                await self.options.prepare(worker)
            tasks = self._bundle(worker, task)
            session.occupancy[worker] += len(tasks) - 1
            self._in_flight(worker, tasks)
            bundled = len(tasks) > 1
            msg = self._bundle_out(worker, tasks) if bundled else task.msg
            reply = await channel.call(msg, self.options.timeout)
        except asyncio.CancelledError:  # the call, whose own coroutine runs this runner
            cancelled = True  # (see _start_round): the task stays in flight, among those
            raise  # run() tells the worker to drop
        except Exception as e:
            if bundled:
                return self._bundle_setback(worker, tasks, e)
            return self._setback(worker, task, e)
        finally:
            if not cancelled:
                for t in tasks:
                    self.in_flight.pop(t, None)
                    self.sent_at.pop(t, None)
                self.bundles_out.pop(task, None)
            session.occupancy[worker] -= len(tasks)  # (a cut took off its own)
            if self.need:
                session.give_back(worker, self.need)
        if bundled:
            self._bundle_replied(worker, tasks, reply)
        else:
            self._replied(worker, task, reply)
        return True

    def _in_flight(self, worker, tasks):
        """``tasks`` (one message's) are in flight on ``worker`` from now."""
        now = asyncio.get_running_loop().time()
        for task in tasks:
            self.in_flight[task] = worker
            self.sent_at[task] = now
            self.whole.discard(task)  # a new run, which a split may find going
        if self.probe is None:
            self._probe_later()  # its time counts from the first send, not a connect

    def _replied(self, worker, task, reply):
        """Keep what ``task`` made on ``worker``, and what its run time says."""
        if "ran" in reply:  # stopped early: the rest runs apart (see sharing.py)
            self._split_off(task, reply["ran"], worker)
        task.results.settle(reply, worker)
        self._finished_one(task)
        if self.remaining:
            self._learn(worker, reply, task)

    def _finished_one(self, task):
        if self.on_done is not None:
            self.on_done(task.results)
        self.ended += 1
        self.remaining -= 1
        if not self.remaining and not self.done.done():
            self.done.set_result(None)
