"""One batch that tasks join while it runs: a loop of submits, the windows of a stream.

A :class:`~distributed3.client.dispatch.Batch` learns as its replies come how many tasks
a worker may have in flight and how many workers are worth using.  A batch per
``submit`` -- or per window of an ``imap`` -- would start that learning over for every
task, one message each way per task, a thread woken per task on its worker.  A
:class:`Feed` keeps one batch running while it has tasks: what is added meanwhile joins
it, is sent with what else is ready in that turn of the loop, and is answered likewise::

    submit(f, 1) --> feed.add --> no batch running: Batch([t1]), run in the background
    submit(f, 2) --> feed.add --> batch.add([t2]): its slots, depth and crowd as learned
    ...              the batch ends once it has nothing left; the next add starts one

Submits reach their feed a loop turn's worth at a time (see :mod:`.inbox`), so a loop of
them goes several tasks to a message.

``independent`` tasks come from separate calls (submits): a task that cannot be sent
(its arguments do not pickle) or that runs past its time limit fails alone, never the
others.  Whatever fails the batch itself (no worker left, interrupted) fails every
task it still had.

>>> from distributed3.client.tasks import make_tasks
>>> async def two():
...     feed = Feed(pool.session, "abs", independent=True)
...     handles = []
...     for x in (-1, -2):
...         made, tasks = await make_tasks(pool.session, abs, [(x,)], {})
...         feed.add(tasks, made)
...         handles += made
...     return [await h.aget() for h in handles]
>>> pool.session.sync(two())
[1, 2]
"""
import asyncio
import weakref

from ..exceptions import WorkerLostError
from .dispatch import Batch
from .options import DEFAULTS

__all__ = ["Feed", "fail_pending"]


def fail_pending(handles, error, on_done=None):
    """A background batch failed: ``error`` is for those of ``handles`` still pending,
    whom nobody else will tell; ``on_done`` (a stream's, which waits for every one) is
    called with them.

    >>> from distributed3.client.handles import RemoteData
    >>> h = RemoteData("x", pool.session, status="pending")
    >>> fail_pending([h], ValueError("gone"), lambda failed: print(len(failed), "failed"))
    1 failed
    >>> h.status
    'error'
    """
    failed = [h for h in handles if h.status == "pending"]
    for handle in failed:
        handle.set_error(error, "")
    if failed and on_done is not None:
        on_done(failed)


class Feed:
    """Tasks added to one running batch of ``name`` (see the module's docstring)."""

    def __init__(self, session, name, *, options=DEFAULTS, on_done=None, independent=False):
        self.session = session
        self.name = name
        self.options = options
        self.on_done = on_done  # called with each task's results as it ends
        self.independent = independent
        self.batch = None
        self.running = None  # the background run of `batch`
        self._pending = None  # the handles added to `batch`: those pending fail with it
        self._pruned = 0  # how many were left at the last pruning

    def add(self, tasks, handles=()):
        """Run ``tasks`` in the running batch, or a new one; ``handles`` are their
        results, failed with the batch if it fails."""
        if not tasks:
            return
        batch = self.batch
        # no await between run()'s last look at `remaining` and its end: while `running`
        # is not done, the batch takes up what is added
        if batch is None or self.running.done() or batch.error is not None:
            batch = self.batch = Batch(self.session, tasks, self.name, options=self.options,
                                       on_done=self.on_done, independent=self.independent)
            self._pending, self._pruned = weakref.WeakSet(), 0
            self.running = asyncio.ensure_future(self._run(batch, self._pending))
        else:
            batch.add(tasks)
        pending = self._pending
        for h in handles:
            if h.status == "pending":
                pending.add(h)
        if len(pending) > 2 * self._pruned + 64:  # finished ones go, now and then
            for h in [h for h in pending if h.status != "pending"]:
                pending.discard(h)
            self._pruned = len(pending)

    def close(self, error):
        """Stop the running batch; its tasks not finished fail with ``error``."""
        if self.running is not None and not self.running.done():
            fail_pending(self._pending, error, self.on_done)
            self.running.cancel()

    def capacity(self):
        """How many tasks the workers at work on the running batch may have in flight
        (0: none runs): their cores times the depth their replies taught."""
        batch = self.batch
        if batch is None or batch.error is not None:
            return 0
        return batch.working_slots()

    async def _run(self, batch, pending):
        try:
            await batch.run()
        except (Exception, asyncio.CancelledError) as e:  # the handles' error: nobody
            # awaits this run; cancelled (the session closes), they fail as the batch did
            error = e if isinstance(e, Exception) else (
                batch.error or WorkerLostError(f"{self.name} was cancelled"))
            fail_pending(pending, error, self.on_done)
            if not isinstance(e, Exception):
                raise
        finally:
            if self.batch is batch:
                self.batch = None
