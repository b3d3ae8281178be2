"""Who runs a worker process's event loop: the thread that reads a lone task runs it.

Handing a task from the event loop to a sleeping task thread costs that thread's
wake-up: on a VM, a halted CPU woken through the hypervisor, then cold caches.
So in a worker process (``dworker``, or one that ``Pool()`` forks), the thread
that reads a lone task off its socket, with a core free, runs that task itself
between two turns of the loop, and then leads on::

    leader:  reads a lone task --> runner.launch: it is mine (Relay.hand_off)
             --> loop.stop() --> the loop's turn ends --> it runs the task and
             replies --> loop.run_forever() again
    watch:   a leader's own task has run WATCH (10 ms): the leader is relieved,
             and another thread is told to lead (the runner's, see
             runner.lead_from_now); the old one drains the task queue once its
             task ends, as any task thread does.  With several cores the new
             leader may run a lone task of its own meanwhile: the watch times
             that one in turn (one leader at a time, and the relieved by name)

So the loop goes unled for a tiny task's length, and at most about 10-20 ms for
a long one, or one that waits for something this worker's loop must do.  The
loop is never run by two threads: a thread leads only once the one before has
given it up.  The threads are the task runner's (:mod:`.runner`): each drains
the queue, idles, or leads; ``ncores`` of them run tasks at most, the leader's
own included.  An ``apply(f, x).get()`` took 3-7 % less than by a task thread
(interleaved runs on the same machine), where running it on the loop itself --
which the design rules out: a task must not stop the loop -- took 10-15 % less.

The thread that called :func:`run` (a process's main thread, where a server
sets its signal handlers, which only that thread may) leads until the first
task comes, then hands the loop on for good and keeps the watch: so a long task
never holds up a process told to stop, as task threads are daemons.

>>> async def main():
...     return "served"
>>> run(main())
'served'
"""
import asyncio
import threading
import time
import weakref

__all__ = ["Relay", "run", "relay_of"]

_relays: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> its Relay


def relay_of(loop):
    """The :class:`Relay` of ``loop``; ``None`` for a loop :func:`run` did not start
    (a worker in a process of others, as in tests: its tasks go to its threads)."""
    return _relays.get(loop)


class Relay:
    """The hand-over of ``loop`` between the threads of its one task runner.

    ``runner`` (set by the first :class:`~.runner.TaskRunner` to launch a task on
    the loop) gives a thread to lead with :meth:`lead`; ``job`` is the task the
    leader runs once its turn of the loop ends (:meth:`hand_off`).
    """

    WATCH = 0.01  # s a leader's own task may leave the loop unled
    HOT = 0.1  # s after the last hand-over that the watch goes on looking

    def __init__(self, loop, main):
        self.loop = loop
        self.main = main  # the task whose end ends the process
        self.runner = None
        self.job = None
        self.caller = threading.get_ident()  # run()'s thread: it never runs tasks
        self.relocating = False  # run()'s thread leads: it hands the loop on at once
        self.ended = threading.Event()  # the main task ended, or the loop failed
        self.error = None
        # the watch on the leader running a task of its own (see watch()), under cond
        self.cond = threading.Condition(threading.Lock())
        self.running = None  # (thread, when it began): the loop is unled since
        self.relieved = set()  # threads whose lead another thread took: they lead no more
        self.last = 0.0  # when the last such task began
        self.watching = False  # the watch looks every WATCH (else it sleeps until told)

    def adopt(self, runner):
        """``runner`` runs this loop's tasks, and its threads lead it, if it is the
        first to ask; whether it is."""
        if self.runner is None:
            self.runner = runner
        return self.runner is runner

    def may_hand_off(self):
        """On the loop: whether this thread may run a task itself once the loop's turn
        ends (:meth:`hand_off`).  Not while run()'s thread leads: it hands the loop on
        now (the task waits in the queue meanwhile), and leaves tasks to the others."""
        if self.job is not None or self.relocating:
            return False
        if threading.get_ident() == self.caller:
            self.relocating = True
            self.loop.stop()
            return False
        return True

    def hand_off(self, job):
        """On the loop: this thread runs ``job`` once the loop's turn ends (see
        :meth:`lead`), then leads on, unless the task runs long (:meth:`watch`)."""
        self.job = job
        self.loop.stop()

    def begin(self):
        """The leader runs its job now, the loop unled: the watch times it."""
        with self.cond:
            self.last = time.perf_counter()
            self.running = (threading.get_ident(), self.last)
            if not self.watching:  # asleep: the one wake-up of a burst of hand-overs
                self.cond.notify()

    def done(self):
        """This thread's job ended: whether it leads on, or was relieved meanwhile (and
        another thread leads, which may be running a job of its own by now)."""
        me = threading.get_ident()
        with self.cond:
            if me in self.relieved:
                self.relieved.discard(me)
                return False
            self.running = None
        return True

    def watch(self):
        """In run()'s thread, until the process ends: give the lead to another thread
        when the leader's own task has run ``WATCH`` seconds.  It looks every ``WATCH``
        while hand-overs keep coming, and sleeps until the next after ``HOT`` without."""
        cond = self.cond
        with cond:
            while not self.ended.is_set():
                self.watching = time.perf_counter() - self.last < self.HOT
                cond.wait(self.WATCH if self.watching else None)
                running = self.running
                if running is not None and time.perf_counter() - running[1] >= self.WATCH:
                    self._relieve()

    def _relieve(self):
        """Under ``cond``: the leader's own task runs on; another thread leads now."""
        self.relieved.add(self.running[0])
        self.running = None
        self.cond.release()
        try:
            self.runner.lead_from_now()
        finally:
            self.cond.acquire()

    def stop(self):
        """run()'s thread stops waiting (Ctrl-C, say): the main task is cancelled, by
        another thread if the leader runs a task of its own."""
        with self.cond:
            if self.running is not None:
                self._relieve()
        self.loop.call_soon_threadsafe(self.main.cancel)

    def _end(self, error=None):
        with self.cond:
            self.error = error
            self.ended.set()
            self.cond.notify_all()

    def lead(self):
        """In a runner thread: run the loop until this thread has a task to run, and
        return it; ``None`` once the process ends (the main task is done)."""
        while True:
            if self.main.done():  # its stop may have come in the turn of a hand-over
                self._end()
                return None
            try:
                self.loop.run_forever()
            except BaseException as e:  # a callback raised SystemExit, say: the end
                self._end(e)
                return None
            job, self.job = self.job, None
            if job is not None:
                return job  # (else the end, or a stray stop: lead on)

    def caller_leads(self):
        """In run()'s thread: run the loop until the first task asks for a hand-over
        (or the end); ``True`` if a runner thread is to lead from now on."""
        while True:
            self.loop.run_forever()
            if self.main.done():
                return False
            if self.relocating:  # the threads hand it on among themselves from now
                self.relocating = False
                return True


def run(main):
    """Run the coroutine ``main`` as :func:`asyncio.run` does, on a loop whose threads
    relay its lead (see above); its result, or its exception."""
    with asyncio.Runner() as runner:  # its close() ends what is left, as asyncio.run's
        loop = runner.get_loop()
        task = loop.create_task(main)
        task.add_done_callback(lambda _: loop.stop())
        relay = _relays[loop] = Relay(loop, task)
        if relay.caller_leads():
            relay.runner.lead_from_now()
            try:
                relay.watch()
            except BaseException:  # Ctrl-C with no handler of a server's: end it first
                relay.stop()
                relay.ended.wait()
                raise
        if relay.error is not None:
            raise relay.error
        return task.result()
