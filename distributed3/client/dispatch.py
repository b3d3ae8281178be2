"""Feeding the tasks of one map or apply to the workers as their slots free up.

::

    Batch.run()
      |-- pinned[worker]: tasks whose inputs that worker holds (decide_worker)
      |-- free: everything else, pulled by whichever worker has a free slot
      |-- per worker, up to ncores * slots_per_core runners:
      |      task = pinned[worker] or free  --compute-->  worker  --reply-->  handle
      |-- a worker dies mid-task: the task goes back to `free` (at most `retries` times)
      '-- a task's inputs were lost: it waits in `stalled` until the pool has
             recomputed them, then runs again

Used by ``Pool``; knows nothing of the wire beyond ``ConnectionPool.call``.
"""
import asyncio
import logging
from collections import defaultdict, deque

from ..exceptions import (
    CommClosedError,
    ConnectionBrokenError,
    SerializationError,
    WorkerLostError,
    WorkerRetiringError,
)
from ..scheduling import decide_worker
from ..utils import format_address, gc_paused, wait_for

logger = logging.getLogger(__name__)


class Task:
    """One message's worth of work: its results -- a list of handles (one, or a chunk),
    or a chunk's ``ResultGroup`` -- its compute message, its input handles, and the
    index of its first element."""

    __slots__ = ("handles", "msg", "inputs", "index", "deaths", "fallback")

    def __init__(self, handles, msg, inputs, index):
        self.handles = handles
        self.msg = msg
        self.inputs = inputs
        self.index = index
        self.deaths = 0
        self.fallback = None  # makes it name its inputs one by one, should they be lost

    @property
    def key(self):
        """The key of its first result (or of its chunk's results), to name it by."""
        handles = self.handles
        return handles[0].key if type(handles) is list else handles.key

    def settle(self, reply, worker):
        if type(self.handles) is list:
            _settle(self.handles, reply, worker)
        else:
            self.handles.settle(reply, worker)

    def set_error(self, exception, traceback, worker):
        if type(self.handles) is list:
            for handle in self.handles:
                handle.set_error(exception, traceback, worker)
        else:
            self.handles.set_error(exception, traceback, worker)

    def finished(self):
        """Its handles (or chunk) that hold a result now."""
        handles = self.handles
        if type(handles) is list:
            return [h for h in handles if h.status == "finished"]
        return [handles] if handles.status == "finished" else []

    def spread_inputs(self):
        """Name its inputs one by one (its ``fallback``), if it has not yet."""
        if self.fallback is not None:
            self.fallback()
            self.fallback = None
            self.refresh_hints()

    def refresh_hints(self):
        """Point the message's ``who_has`` hints at where the inputs are now."""
        if self.inputs:
            self.msg["who_has"] = {k: list(h.workers) for k, h in self.inputs.items()}


class Batch:
    """The tasks of one map or apply, fed to the workers as their slots free up.

    A task with remote inputs is pinned to the worker :func:`decide_worker`
    picks; the rest go to a shared queue that every worker pulls from, so free
    cores take work first.  Workers that join mid-batch start pulling at once.
    A task whose worker dies goes back to the shared queue, up to ``retries``
    times; after that it fails, since it may be what kills them.  Once a worker
    has died, each worker gets only one task per core at a time, so a later
    death is blamed on the task that was really running.  A worker with nothing
    left to do takes tasks queued for another whose inputs it lacks are small
    (``steal_bytes``): moving them costs less than waiting.  ``timeout`` bounds
    each task's run.
    """

    slots_per_core = 4
    recovery_rounds = 5
    steal_bytes = 4096  # an idle worker takes others' tasks whose inputs it lacks are this small

    def __init__(self, pool, tasks, name, timeout=None, retries=3, on_done=None, prepare=None,
                 resources=None):  # fmt: skip
        self.need = {r: float(n) for r, n in (resources or {}).items() if n}
        self.on_done = on_done  # called with the handles of each task as it ends
        self.prepare = prepare  # awaited with a worker before its first task (stateful pools)
        self.pool = pool
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.pinned = defaultdict(deque)
        self.free = deque()
        self.stalled = []
        self.remaining = len(tasks)
        self.runners = defaultdict(int)
        self.done = asyncio.get_running_loop().create_future()
        self.error = None
        self.lost = set()
        self.careful = False  # after a worker death: one task per core, so blame is exact
        for task in tasks:
            self._place(task)

    def _place(self, task):
        cores = self.pool.available_cores
        if self.need:  # only where the resources it needs exist
            cores = {w: n for w, n in cores.items() if self._eligible(w)}
        if task.inputs and cores:
            who_has = {k: h.workers for k, h in task.inputs.items()}
            nbytes = {k: _total(h.nbytes) for k, h in task.inputs.items()}
            # ties (inputs on several workers) go round by what this batch already placed
            load = {w: self.pool.occupancy[w] + len(self.pinned.get(w, ())) for w in cores}
            worker = decide_worker(list(who_has), who_has, nbytes, cores, load)
            if any(worker in ws for ws in who_has.values()):
                self.pinned[worker].append(task)
                return
        self.free.append(task)

    async def run(self):
        pool = self.pool
        pool._batches.add(self)
        rounds = 0
        try:
            while self.remaining:
                if self.stalled and not any(self.runners.values()):
                    rounds += 1
                    await self._recover_inputs(rounds)
                if not pool.available_cores.keys() - self.lost:
                    self.lost.clear()  # give reconnecting workers another chance
                    try:
                        await pool._wait_for_workers(1)
                    except TimeoutError:
                        raise WorkerLostError(
                            f"no workers left to run {self.remaining} tasks of {self.name}; "
                            f"waited {pool.timeout} s for one to join"
                        ) from None
                workers = sorted(pool.available_cores,
                                 key=lambda w: pool.occupancy[w] / pool.available_cores[w])  # fmt: skip
                started = [o for worker in workers for o in self._openings(worker)]
                if len(started) == 1 and sum(self.runners.values()) == 1:
                    # the only task running (an apply): run it here rather than in a task
                    # of its own -- two turns of the loop fewer on its round trip
                    await self._runner(*started[0])
                    self.done = asyncio.get_running_loop().create_future()
                    if self.error is not None:
                        raise self.error
                    continue  # done, or back in the queue (its worker died)
                for worker, task in started:
                    asyncio.ensure_future(self._runner(worker, task))
                if not self.remaining:
                    break
                if any(self.runners.values()):
                    await asyncio.shield(self.done)
                    self.done = asyncio.get_running_loop().create_future()
                elif not self.stalled:  # no worker can take these tasks now
                    await self._wait_for_a_suitable_worker()
                if self.error is not None:
                    raise self.error
        finally:
            pool._batches.discard(self)

    async def _wait_for_a_suitable_worker(self):
        pool = self.pool
        known = set(pool.available_cores)
        try:
            await wait_for(
                lambda: set(pool.available_cores) - known
                or not self.remaining
                or any(self.runners.values()),
                pool.timeout,
                "",
            )
        except TimeoutError:
            what = f"none has resources {self.need}" if self.need else "none is available"
            raise WorkerLostError(
                f"no worker can run {self.remaining} tasks of {self.name}: {what} "
                f"(waited {pool.timeout} s for one to join)"
            ) from None

    def _eligible(self, worker):
        totals = self.pool.worker_resources.get(worker, {})
        return all(totals.get(r, 0) >= n for r, n in self.need.items())

    def _fits(self, worker):
        totals = self.pool.worker_resources.get(worker, {})
        used = self.pool.resources_in_use[worker]
        return all(used[r] + n <= totals.get(r, 0) for r, n in self.need.items())

    async def _acquire(self, worker):
        """Reserve this batch's resources on ``worker``, waiting while others hold them."""
        pool = self.pool
        while not self._fits(worker):
            await pool._resources_freed().wait()
        for r, n in self.need.items():
            pool.resources_in_use[worker][r] += n

    def _release(self, worker):
        pool = self.pool
        for r, n in self.need.items():
            pool.resources_in_use[worker][r] -= n
        pool._resources_freed().set()

    async def _recover_inputs(self, rounds):
        stalled, self.stalled = self.stalled, []
        for task in stalled:
            task.spread_inputs()
        if rounds > self.recovery_rounds:
            raise WorkerLostError(
                f"inputs of {len(stalled)} tasks of {self.name} were lost "
                f"{self.recovery_rounds} times over; giving up"
            )
        inputs = {k: h for task in stalled for k, h in task.inputs.items()}
        await self.pool._recover(list(inputs.values()))
        for task in stalled:
            task.refresh_hints()
            self._place(task)

    def add_worker(self, worker):
        """Start as many of the batch's tasks on ``worker`` as it may run now."""
        for worker, task in self._openings(worker):
            asyncio.ensure_future(self._runner(worker, task))

    def _openings(self, worker):
        """``[(worker, task)]`` to start on ``worker`` now, counted as running already."""
        ncores = self.pool.available_cores.get(worker)
        if not ncores or worker in self.lost or (self.need and not self._eligible(worker)):
            return []
        # tasks pinned to a worker that is gone are free for anyone
        alive = self.pool.available_cores.keys() - self.lost
        for w in [w for w in self.pinned if w not in alive]:
            self.free.extend(self.pinned.pop(w))
        per_core = 1 if self.careful else self.slots_per_core
        queued = sum(map(len, self.pinned.values()))  # its own, and others' it may take
        want = min(ncores * per_core, len(self.free) + queued)
        out = []
        for _ in range(want - self.runners[worker]):
            task = self._next(worker)  # taken now, so the next worker sees what is left
            if task is None:
                break
            self.runners[worker] += 1
            out.append((worker, task))
        return out

    def _next(self, worker):
        mine = self.pinned.get(worker)
        if mine:
            return mine.popleft()
        if self.free:
            return self.free.popleft()
        return self._steal(worker)

    def _steal(self, worker):
        """A task waiting for another worker, whose inputs cost less to bring here than
        the wait: the last of the longest queue whose missing inputs are small."""
        for queue in sorted(self.pinned.values(), key=len, reverse=True):
            if not queue:
                break
            task = queue[-1]
            if _missing_bytes(task, worker) <= self.steal_bytes:
                task.spread_inputs()  # to fetch its own elements, not their whole chunk
                return queue.pop()
        return None

    async def _runner(self, worker, first):
        """Run tasks on ``worker`` one after the other, starting with ``first``."""
        pool = self.pool
        try:
            while self.error is None and worker in pool.available_cores and worker not in self.lost:
                task, first = first, None
                if task is None:
                    if self.careful and self.runners[worker] > pool.available_cores[worker]:
                        return  # fewer tasks in flight from now on
                    task = self._next(worker)
                    if task is None:
                        return
                if self.need:
                    await self._acquire(worker)
                pool.occupancy[worker] += 1
                try:
                    if self.prepare is not None:
                        await self.prepare(worker)
                    reply = await pool.connection_pool.call(worker, task.msg, self.timeout)
                except (ConnectionBrokenError, CommClosedError) as e:
                    self._worker_died(worker, task, e)
                    return
                except WorkerRetiringError:  # not the task's fault: elsewhere, no blame
                    self.lost.add(worker)
                    self.free.append(task)
                    return
                except WorkerLostError as e:  # the worker could not find the inputs
                    logger.info("Inputs of %s lost: %s", task.key, e)
                    self.stalled.append(task)
                    continue
                except Exception as e:
                    self._task_failed(worker, task, e)
                    continue
                finally:
                    pool.occupancy[worker] -= 1
                    if self.need:
                        self._release(worker)
                task.settle(reply, worker)
                self._finished_one(task)
        finally:
            if first is not None:  # never started: someone else may run it
                self.free.appendleft(first)
            self.runners[worker] -= 1
            if not any(self.runners.values()) and not self.done.done():
                self.done.set_result(None)

    def _finished_one(self, task):
        if self.on_done is not None:
            self.on_done(task.handles)
        self.remaining -= 1
        if not self.remaining and not self.done.done():
            self.done.set_result(None)

    def _worker_died(self, worker, task, error):
        logger.info("Worker %s lost while running %s: %s",
                    format_address(worker), task.key, error)  # fmt: skip
        self.lost.add(worker)
        self.careful = True
        task.deaths += 1
        if task.deaths > self.retries:
            err = WorkerLostError(
                f"task {task.index} of {self.name} (key {task.key!r}) was running on "
                f"{task.deaths} workers that died, the last {format_address(worker)}; it may "
                f"be what killed them, so it is not retried again"
            )
            task.set_error(err, "", worker)
            self._finished_one(task)
        else:
            self.free.append(task)

    def _task_failed(self, worker, task, error):
        if isinstance(error, SerializationError):
            why = error.__cause__ if error.__cause__ is not None else error
            self._fail(SerializationError(
                f"could not serialize the arguments of task {task.index} of "
                f"{self.name}: {type(why).__name__}: {why}"))  # fmt: skip
        elif isinstance(error, TimeoutError) and self.timeout is not None:
            self._fail(TimeoutError(
                f"task {task.index} of {self.name} (key {task.key!r}) did not finish "
                f"within {self.timeout} s on worker {format_address(worker)}"))  # fmt: skip
        else:  # the worker could not run it at all
            task.set_error(error, getattr(error.__cause__, "text", ""), worker)
            self._finished_one(task)

    def _fail(self, error):
        if self.error is None:
            self.error = error


def _missing_bytes(task, worker):
    """Bytes of ``task``'s inputs that ``worker`` lacks; of a chunk it maps over a
    part of, that part's share."""
    over = task.msg.get("over")
    missing = 0
    for key, h in task.inputs.items():
        if worker not in h.workers:
            n = _total(h.nbytes)
            if over is not None and key == over[0]:
                n = n * (over[2] - over[1]) // max(len(h), 1)
            missing += n
    return missing


def _total(nbytes):
    """Bytes of an input: its ``nbytes``, which a chunk of results may keep per element."""
    if type(nbytes) is list:
        return sum(n for n in nbytes if n is not None)
    return nbytes or 0


def _settle(handles, reply, worker):
    """Set each handle from a ``compute`` (one handle) or ``compute_chunk`` reply.

    A result counts once, however often it came: handles no longer pending stay.
    """
    if "key" in reply:  # a lone task's reply: the same, as lists of one
        failed = "exception" in reply
        reply = {"nbytes": [reply.get("nbytes")], "pickled": [reply.get("pickled")],
                 "errors": {0: reply} if failed else {}}  # fmt: skip
    errors = reply["errors"]
    with gc_paused(len(handles)):
        for i, (handle, nbytes, pickled) in enumerate(zip(handles, reply["nbytes"],
                                                           reply["pickled"])):  # fmt: skip
            if handle.status != "pending":
                continue
            if i in errors:
                handle.set_error(errors[i]["exception"], errors[i]["traceback"], worker)
            else:
                handle.set_finished(worker, nbytes, pickled)
