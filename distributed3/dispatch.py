"""Feeding the tasks of one map or apply to the workers as their slots free up.

::

    Batch.run()
      |-- pinned[worker]: tasks whose inputs that worker holds (decide_worker)
      |-- free: everything else, pulled by whichever worker has a free slot
      '-- per worker, up to ncores * slots_per_core runners:
             task = pinned[worker] or free  --compute-->  worker  --reply-->  handle

Used by ``Pool``; knows nothing of the wire beyond ``ConnectionPool.call``.
"""
import asyncio
import logging
from collections import defaultdict, deque

from .exceptions import CommClosedError, ConnectionBrokenError, SerializationError, WorkerLostError
from .scheduling import decide_worker
from .utils import format_address

logger = logging.getLogger(__name__)


class Task:
    """One task of a batch: its result handle, its compute message, its input handles."""

    __slots__ = ("handle", "msg", "inputs", "index")

    def __init__(self, handle, msg, inputs, index):
        self.handle = handle
        self.msg = msg
        self.inputs = inputs
        self.index = index


class Batch:
    """The tasks of one map or apply, fed to the workers as their slots free up.

    A task with remote inputs is pinned to the worker :func:`decide_worker`
    picks; the rest go to a shared queue that every worker pulls from, so free
    cores take work first.  Workers that join mid-batch start pulling at once;
    a task whose worker dies goes back to the shared queue.
    """

    slots_per_core = 4

    def __init__(self, pool, tasks, name):
        self.pool = pool
        self.name = name
        self.pinned = defaultdict(deque)
        self.free = deque()
        self.remaining = len(tasks)
        self.runners = defaultdict(int)
        self.done = asyncio.get_running_loop().create_future()
        self.error = None
        self.lost = set()
        cores = pool.available_cores
        for task in tasks:
            if task.inputs and cores:
                who_has = {k: h.workers for k, h in task.inputs.items()}
                nbytes = {k: h.nbytes or 0 for k, h in task.inputs.items()}
                worker = decide_worker(list(who_has), who_has, nbytes, cores, pool.occupancy)
                if any(worker in ws for ws in who_has.values()):
                    self.pinned[worker].append(task)
                    continue
            self.free.append(task)

    async def run(self):
        pool = self.pool
        pool._batches.add(self)
        try:
            while self.remaining:
                if not pool.available_cores.keys() - self.lost:
                    self.lost.clear()  # give reconnecting workers another chance
                    try:
                        await pool._wait_for_workers(1)
                    except TimeoutError:
                        raise WorkerLostError(
                            f"no workers left to run {self.remaining} tasks of {self.name}"
                        ) from None
                workers = sorted(pool.available_cores,
                                 key=lambda w: pool.occupancy[w] / pool.available_cores[w])  # fmt: skip
                for worker in workers:
                    self.add_worker(worker)
                await asyncio.shield(self.done)
                self.done = asyncio.get_running_loop().create_future()
                if self.error is not None:
                    raise self.error
        finally:
            pool._batches.discard(self)

    def add_worker(self, worker):
        ncores = self.pool.available_cores.get(worker)
        if not ncores or worker in self.lost:
            return
        # tasks pinned to a worker that is gone are free for anyone
        alive = self.pool.available_cores.keys() - self.lost
        for w in [w for w in self.pinned if w not in alive]:
            self.free.extend(self.pinned.pop(w))
        want = min(ncores * self.slots_per_core, len(self.free) + len(self.pinned.get(worker, ())))
        for _ in range(want - self.runners[worker]):
            self.runners[worker] += 1
            asyncio.ensure_future(self._runner(worker))

    def _next(self, worker):
        mine = self.pinned.get(worker)
        if mine:
            return mine.popleft()
        if self.free:
            return self.free.popleft()
        return None

    async def _runner(self, worker):
        pool = self.pool
        try:
            while self.error is None and worker in pool.available_cores and worker not in self.lost:
                task = self._next(worker)
                if task is None:
                    return
                pool.occupancy[worker] += 1
                try:
                    reply = await pool.connection_pool.call(worker, task.msg)
                except SerializationError as e:
                    why = e.__cause__ if e.__cause__ is not None else e
                    self._fail(SerializationError(
                        f"could not serialize the arguments of task {task.index} of "
                        f"{self.name}: {type(why).__name__}: {why}"))  # fmt: skip
                    return
                except (ConnectionBrokenError, CommClosedError) as e:
                    logger.info("Worker %s lost while running %s: %s",
                                format_address(worker), task.handle.key, e)  # fmt: skip
                    self.lost.add(worker)
                    self.free.append(task)
                    return
                except Exception as e:  # the worker could not run it (e.g. inputs lost)
                    task.handle.set_error(e, getattr(e.__cause__, "text", ""), worker)
                else:
                    handle = task.handle
                    if "exception" in reply:
                        handle.set_error(reply["exception"], reply["traceback"], worker)
                    else:
                        handle.status = "finished"
                        handle.workers = {worker}
                        handle.nbytes = reply["nbytes"]
                finally:
                    pool.occupancy[worker] -= 1
                self.remaining -= 1
                if not self.remaining and not self.done.done():
                    self.done.set_result(None)
        finally:
            self.runners[worker] -= 1
            if not any(self.runners.values()) and not self.done.done():
                self.done.set_result(None)

    def _fail(self, error):
        if self.error is None:
            self.error = error
