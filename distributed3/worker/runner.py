"""A worker's task threads: tasks queued on the loop, run ``ncores`` at a time.

::

    loop:    launch(job) --> queue --+
                                     |  up to ncores threads, each taking job after job
    thread:  run_chunk --> reply --> landed (results for the loop) --> reply sent
    loop:    catch_up(): landed --> store(...) (the worker keeps the results)

A thread takes the next job from the queue as soon as it has answered one, without
going back to the thread pool, so a burst of small tasks costs no thread wake-up
per task; and it wakes the loop once for all the results it hands over meanwhile.
The reply leaves from the thread once the results are in ``landed``: the loop takes
them (:meth:`TaskRunner.catch_up`) before it handles any other message, so no one
can ask for a result before it is kept.  In a worker process of its own, the thread
that leads the loop runs a lone task itself when a core is free (see relay.py).

>>> import asyncio
>>> from distributed3.core.protocol import dumps_function
>>> class Answers:
...     def prepare(self, msg): return msg
...     def send_prepared(self, msg, loop, now=False): self.reply = msg
>>> async def demo():
...     kept = []
...     runner = TaskRunner(1, lambda *stored: kept.append(stored))
...     comm = Answers()
...     runner.launch(comm, ["k"], dumps_function(abs), [(-3,)], True, None, None, None, True)
...     while not kept:
...         await asyncio.sleep(0.01)
...     runner.close()
...     return kept[0][:2], comm.reply["result"]["key"]
>>> asyncio.run(demo())
((['k'], [3]), 'k')
"""
import asyncio
import queue
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, ThreadPoolExecutor

from ..core.messages import error_message, ok_message
from ..core.protocol import sizeof
from ..exceptions import TaskGivenBackError, WorkerPausedError
from .execute import chunk_reply, lone_reply, run_chunk
from .relay import relay_of
from .split import Share

__all__ = ["TaskRunner"]

# s a task ran, past which its reply leaves at once, not with those of the tasks queued
# behind it: about the round trip that the pool's next task, sent on this reply, takes
REPLY_AT_ONCE = 0.0002


class TaskRunner:
    """Runs a worker's tasks in ``ncores`` threads and answers each from its thread.

    ``store(keys, values, errors, sizes, owner)`` is called on the loop with each
    task's results.  ``active`` counts tasks launched and not yet stored (a chunk's
    elements each).
    """

    def __init__(self, ncores, store, memory_limit=None):
        self.ncores = ncores
        self.store = store
        self.memory_limit = memory_limit  # a result over it fails its task (MemoryError)
        # for a stateful pool's set-up and updates; tasks run in threads of our own
        self.executor = ThreadPoolExecutor(ncores, thread_name_prefix="distributed3-task")
        self._wakes = queue.SimpleQueue()  # one per drain to start; False: a thread ends
        self._threads = 0  # task threads started
        self._relay = None  # the Relay of this worker process's loop, if it has one
        self.closed = False  # no task is handed to the leader after close()
        self._idle = 0  # of them, waiting for a drain to start
        self.active = 0
        self._queue = deque()  # jobs not yet taken by a thread
        # name -> (Share, comm) of a chunk queued or running (see split()), and where
        # its reply goes
        self._shares = {}
        self._given = {}  # Share -> its elements given away, no longer counted in active
        self._lock = threading.Lock()  # the queue and the count of threads draining it
        self._draining = 0
        self._landed = deque()  # results of task threads the loop has yet to keep
        self._catch_up_due = False
        self._loop = None
        self._go = threading.Event()  # cleared while paused: threads take no new job
        self._go.set()
        self.paused = None  # while paused: why, as a WorkerPausedError for turned-away tasks
        self.telemetry = None  # a worker.telemetry.Telemetry, for a center's dashboard

    def launch(self, comm, keys, function, args_list, spread, kwargs, seeds, owner, lone,
               budget=None, values_only=False):  # fmt: skip
        """Queue a task (see :meth:`~distributed3.worker.Worker.compute_chunk` for the
        arguments); its reply goes to ``comm`` (``prepare``/``send_prepared`` from its
        thread, or ``answer`` on the loop)."""
        if self._loop is None:
            self._first_launch()
        if self.paused is not None:  # turned away: the pool sends it elsewhere
            comm.answer(error_message(self.paused))
            return
        self.active += len(args_list)
        share = None
        if not lone and len(args_list) > 1:  # a chunk: its tail may go to another core
            share = Share(len(args_list), budget)
            self._shares[_name(keys)] = (share, comm)
        job = (comm, keys, function, args_list, spread, kwargs, seeds, owner, lone,
               values_only, share)  # fmt: skip
        relay = self._relay
        if (lone and relay is not None and not self.closed and relay.may_hand_off()
                and self._claim(lead=True)):  # fmt: skip
            relay.hand_off(job)  # this thread runs it between two turns (see relay.py)
            return
        self._claim(job)

    def _first_launch(self):
        """On the loop: in a worker process of its own, this runner's threads take turns
        to lead the loop (see relay.py): the one that leads runs lone tasks itself."""
        self._loop = asyncio.get_running_loop()
        relay = relay_of(self._loop)
        if relay is not None and relay.adopt(self):
            self._relay = relay

    def _claim(self, job=None, lead=False):
        """Queue ``job``, if given, and claim a thread to drain the queue, unless
        ``ncores`` do; with ``lead``, the core for the thread that leads the loop, to
        run a task itself (see relay.py).  Whether one was."""
        with self._lock:
            if job is not None:
                self._queue.append(job)
            start = self._draining < self.ncores
            if start:
                self._draining += 1
                new = None if lead else self._claim_thread()
        if start and not lead:
            self._wake(new, True)
        return start

    def _claim_thread(self):
        """Under the lock: an idle thread claimed, or ``True``: a new one is to start
        (each thread drains, idles or leads: ``ncores`` of them, and with a relay one
        more, at most)."""
        if self._idle:
            self._idle -= 1
            return False
        self._threads += 1
        return True

    def _wake(self, new, command):
        # a thread of our own, woken: no pool's future, work item and thread count per
        # task, a third of a tiny task's hand-over on these machines
        if new:
            threading.Thread(target=self._task_thread, daemon=True,
                             name=f"distributed3-task-{self._threads}").start()  # fmt: skip
        self._wakes.put(command)

    def _lead(self):
        """Lead the loop, running the lone tasks it hands to this thread meanwhile (see
        relay.py), until another thread leads (``True``: this one drains the queue
        from now), or the process ends (``False``)."""
        relay = self._relay
        while (job := relay.lead()) is not None:
            relay.begin()
            self._run(*job, wake=False)
            leads_on = relay.done()
            # the loop waits for this thread, unless another took the lead meanwhile
            self._catch_up_soon(threadsafe=not leads_on)
            if not leads_on:  # it ran long: another thread leads now
                return True
            with self._lock:  # this one leads again
                self._draining -= 1
            if self._queue:  # queued in the turn that handed this one over, counting on
                self._claim()  # this thread to drain them: another will
        return False

    def lead_from_now(self):
        """From the relay's watch (see relay.py): another thread of this runner leads
        from now on -- the leader runs a long task, or run()'s thread led until now."""
        with self._lock:
            new = self._claim_thread()
        self._wake(new, "lead")

    def _task_thread(self):
        """Drain the queue each time a launch wakes this thread (see :meth:`launch`), or
        lead the loop until a task of its own comes (see relay.py)."""
        while command := self._wakes.get():
            try:
                if command == "lead" and not self._lead():  # the process ends
                    return
                self._drain()
            except RuntimeError:  # its loop closed (the worker went) under a task: no one
                return  # is there to answer

    def pause(self, why="the worker is paused"):
        """Start no new task (running ones go on) until :meth:`resume`: the worker is
        near its memory limit (see monitor.py).  The queued tasks, and those that come
        meanwhile, are answered with a ``WorkerPausedError`` saying ``why``: their pools
        send them to other workers rather than leave them waiting here."""
        self.paused = WorkerPausedError(why)
        self._go.clear()
        with self._lock:
            queued, self._queue = self._queue, deque()
        for job in queued:
            if job[-1] is not None:
                self._unshare(job[1], job[-1])
            self._failed(job[0], self.paused, len(job[3]), job[-1])

    def resume(self):
        self.paused = None
        self._go.set()

    def _drain(self):  # in a task thread
        while True:
            self._go.wait()
            with self._lock:
                if not self._queue:  # idle from now: a launch may claim this thread
                    self._draining -= 1
                    self._idle += 1
                    return
                job = self._queue.popleft()
            self._run(*job)

    def _run(self, comm, keys, function, args_list, spread, kwargs, seeds, owner, lone,
             values_only, share, wake=True):  # fmt: skip
        """Run a job in this thread and reply; with ``wake``, the loop is woken to keep
        the results (else the caller sees to it: :meth:`_catch_up_soon`)."""
        loop = self._loop
        try:
            telemetry = self.telemetry
            wall = time.time() if telemetry is not None else 0.0  # only for a dashboard
            start = time.perf_counter()  # the tasks' own time, not their wait for a thread
            try:
                values, errors = run_chunk(function, args_list, kwargs, seeds, spread, share)
            finally:
                if share is not None:
                    self._unshare(keys, share)
            if self.memory_limit is not None:
                too_big(keys, values, errors, self.memory_limit)
            took = self._took(start, len(values))
            reply, sizes, unkept = _reply(keys, values, errors, took, lone, values_only)
            if len(values) < len(args_list):  # split: the rest runs elsewhere
                reply["ran"] = len(values)
            prepared = comm.prepare(ok_message(reply))  # None: the loop answers
            answer = reply if prepared is None else None
            # kept by the loop before it handles any message, sent after: the results
            # are the loop's before anyone can ask for them
            self._landed.append((comm, keys, values, unkept, sizes, owner, answer,
                                 len(args_list), share))  # fmt: skip
            if prepared is not None:  # a long task's reply does not wait for the others'
                comm.send_prepared(prepared, loop, took >= REPLY_AT_ONCE)
            if telemetry is not None:  # the dashboard's record: after the reply left
                first = next(iter(errors.values()), None)
                telemetry.task(wall, wall + took, keys, len(values), len(errors),
                               None if first is None else f"{type(first).__name__}: {first}")
            if wake:
                self._catch_up_soon()
        except BaseException as e:  # the task must not go unanswered
            loop.call_soon_threadsafe(self._failed, comm, e, len(args_list), share)

    def _catch_up_soon(self, threadsafe=True):
        """Have the loop keep the results handed over (once for all those handed over
        meanwhile); ``threadsafe=False`` from the thread that leads the loop, between
        two turns: no wake-up through the loop's self-pipe."""
        if not self._catch_up_due:
            self._catch_up_due = True
            schedule = self._loop.call_soon_threadsafe if threadsafe else self._loop.call_soon
            schedule(self.catch_up)

    def _unshare(self, keys, share):
        if self._shares.get(_name(keys), (None,))[0] is share:
            del self._shares[_name(keys)]

    def split(self, name, rest=False):
        """Stop the chunk named ``name`` (queued or running) at an element it has not
        started, keeping half of those it has not (none, with ``rest``); the others are
        for another core to run.  The chunk's new end; ``None`` when it has nothing
        left to give (finished, or at its last element); ``-1`` when it is not here
        (yet: it may still be fetching its inputs)."""
        found = self._shares.get(name)
        return -1 if found is None else self._give_away(found[0], rest)

    def _give_away(self, share, rest):
        """On the loop: ``share.split(rest)``; the elements it gives away stop counting
        as ``active`` now, not when their chunk ends."""
        before = share.limit
        end = share.split(rest)
        given = before - share.limit  # (or taken off by its thread meanwhile: as well)
        if given > 0:
            self.active -= given
            self._given[share] = self._given.get(share, 0) + given
        return end

    def _took(self, start, n):
        """Seconds the ``n`` tasks run since ``start`` took: what their reply reports."""
        return time.perf_counter() - start

    def catch_up(self):
        """On the loop: store the results the threads have finished, and send the
        replies they could not (results that could not be serialized)."""
        self._catch_up_due = False  # before taking: a result landing now wakes us again
        landed = self._landed
        while landed:
            comm, keys, values, errors, sizes, owner, answer, n, share = landed.popleft()
            self.active -= n - self._given.pop(share, 0)
            self.store(keys, values, errors, sizes, owner)
            if answer is not None:
                comm.answer(ok_message(answer))

    def _failed(self, comm, error, n=1, share=None):
        self.active -= n - self._given.pop(share, 0)
        comm.answer(error_message(error))

    def cancel(self, keys=None, connection=None, give_back=False):
        """Drop the queued tasks (none a thread has taken) of ``keys``, or whose replies
        were to go to ``connection``; how many.  Their client stopped waiting for them,
        or (``give_back``) will run them on another core: they are answered so.  Unless
        given back, the chunks of those that a thread runs stop after the element each
        runs (their reply says how many ran).
        """
        keys = set(keys or ())

        def dropped(job):
            if connection is not None and getattr(job[0], "comm", job[0]) is connection:
                return True
            ks = job[1]
            return bool(keys) and (ks in keys if type(ks) is str else not keys.isdisjoint(ks))

        with self._lock:
            gone = [job for job in self._queue if dropped(job)]
            if gone:
                self._queue = deque(job for job in self._queue if not dropped(job))
        for job in gone:
            if job[-1] is not None:
                self._unshare(job[1], job[-1])
            if connection is None:  # answered, so that the channel counts them done
                what = job[1][0] if type(job[1]) is list and len(job[1]) == 1 else job[1]
                error = (TaskGivenBackError(f"task {what!r} was given back unrun") if give_back
                         else CancelledError(f"task {what!r} was cancelled"))  # fmt: skip
                self._failed(job[0], error, len(job[3]), job[-1])
            else:  # nobody is there to answer
                self.active -= len(job[3]) - self._given.pop(job[-1], 0)
        if not give_back:
            for name, (share, comm) in list(self._shares.items()):  # a thread may unshare
                if name in keys or (connection is not None
                                    and getattr(comm, "comm", comm) is connection):  # fmt: skip
                    self._give_away(share, rest=True)
        return len(gone)

    def close(self):
        """Drop the tasks no thread has taken yet; stop the threads once they are idle."""
        self.closed = True
        with self._lock:
            dropped = sum(len(job[3]) - self._given.pop(job[-1], 0) for job in self._queue)
            self._queue.clear()
            self._shares.clear()
        self.active -= dropped
        self.resume()  # a paused thread finds the queue empty and ends
        for _ in range(self._threads):
            self._wakes.put(False)
        self.executor.shutdown(wait=False, cancel_futures=True)


def _reply(keys, values, errors, took, lone, values_only):
    """``(reply, sizes, unkept)`` of a job's results: its reply (:func:`lone_reply` for a
    lone task), their sizes, and the positions store() skips -- failed ones, and for a
    stream what the reply carries (neither kept here nor told to the center)."""
    if lone:
        reply = lone_reply(keys[0], values, errors, took)
        inline = values_only and "pickled" in reply
        return reply, [reply.get("nbytes")], {0: None} if inline else errors
    reply = chunk_reply(values, errors, took, whole=type(keys) is str)
    unkept = errors
    if values_only and type(keys) is not str:
        inline = reply["pickled"]
        unkept = {**errors, **{i: None for i, p in enumerate(inline) if p is not None}}
    return reply, reply["nbytes"], unkept


def _name(keys):
    """What a task's keys are named by in a split: its chunk's key, or its first key."""
    return keys if type(keys) is str else keys[0]


def too_big(keys, values, errors, limit):
    """Fail (in ``errors``, with a ``MemoryError`` naming it) each task whose result alone
    is over ``limit`` bytes; its value is dropped.

    >>> values, errors = [b"x" * 10, b"y" * 1000], {}
    >>> too_big(["a", "b"], values, errors, 100)
    >>> values[1], str(errors[1])
    (None, "task 'b' returned 1,000 bytes, more than this worker's memory limit of 100 bytes")
    """
    for i, value in enumerate(values):
        if i in errors or value is None:
            continue
        nbytes = sizeof(value)
        if nbytes > limit:
            key = f"{keys}#{i}" if type(keys) is str else keys[i]
            values[i] = None
            errors[i] = MemoryError(f"task {key!r} returned {nbytes:,} bytes, more than this "
                                    f"worker's memory limit of {limit:,} bytes")
