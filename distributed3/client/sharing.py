"""Sharing out a running chunk: a core with nothing to do takes the elements that a
chunk running elsewhere has not started.

A map is sent in chunks whose length is guessed before they run, and a chunk runs
its elements in a row on one core.  Where the guess was wrong -- long elements at the
end of a map of short ones, or a handful of long ones in one chunk -- one core would
work through them while the others idle.  So once a core is free and nothing is
queued, the tasks a worker queues behind others are given back unrun, and the
batch asks the chunks that have run longest to stop halfway through the elements
they have not started (see :mod:`distributed3.worker.split`); the rest of each goes
to the free cores as a task of its own, which can be split again::

    a worker's runner ends, nothing queued --SHARE_AFTER--> _share_out()
       cancel(give_back) of tasks queued behind others --> the first free core
       split(key) --> worker: "I stop at 7" (None: nothing left to give; -1: not
                      there yet, its inputs on their way: asked again in a moment)
       task.split(7): elements 7.. become a task, their results kept under their own
       keys (results.ResultGroup.split) --> queued --> the first free core

The chunk's reply says where it stopped too (``ran``), whichever comes first.

Mixed into :class:`~distributed3.client.dispatch.Batch`, which provides ``session``,
``crowd``, ``in_flight``, ``runners``, ``lost``, ``resting``, ``need``, ``error``, ``remaining``,
``queued``, ``add``, ``depth``, ``_shallow`` and ``message_seconds``.

>>> sorted(m for m in vars(Sharing) if not m.startswith("__"))[:2]
['_ask_split', '_free_cores']
"""
import asyncio
import logging
from collections import defaultdict

__all__ = ["Sharing", "SHARE_AFTER"]

SHARE_AFTER = 0.01  # s a core is free, and a chunk has run, before the chunk is split

logger = logging.getLogger(__name__)


class Sharing:
    """A batch's splitting of chunks in flight, for free cores."""

    def _init_sharing(self):
        self.sent_at = {}  # task in flight -> when it was sent (the loop's clock)
        self.asked = set()  # tasks whose worker was asked to split them, no answer yet
        self.whole = set()  # tasks whose worker had nothing left to give
        self.sharing = None  # the timer of _share_out

    def _share_soon(self):
        """A core became free with nothing queued: split chunks in a moment, unless
        their own replies come first."""
        if self.sharing is None and self.remaining and self.error is None:
            loop = asyncio.get_running_loop()
            self.sharing = loop.call_later(SHARE_AFTER, self._share_out)

    def _share_out(self):
        """A core has been free for ``SHARE_AFTER``, nothing queued: the tasks waiting
        behind others on a worker are given back (they are no tiny ones, by now), and
        the chunks that have run longest, one per free core, are asked to split."""
        self.sharing = None
        if self.error is not None or self.queued() or not self.remaining:
            return
        cores, sent_at = self.session.cores, self.sent_at
        now = asyncio.get_running_loop().time()
        by_worker = defaultdict(list)
        for task, worker in self.in_flight.items():
            by_worker[worker].append(task)
        # more waiting there than its cores, sent SHARE_AFTER ago or more: tasks that a
        # feed (submits, a stream's windows) sent a moment ago say nothing of their length
        sent_before = now - SHARE_AFTER
        laden = {w for w, tasks in by_worker.items()
                 if sum(sent_at[t] <= sent_before for t in tasks) > cores.get(w, 0)}
        running = [t for w, tasks in by_worker.items()  # the first sent to each core
                   for t in sorted(tasks, key=sent_at.__getitem__)[:cores.get(w, 0)]]  # fmt: skip
        chunks = [t for t in running if t.size > 1 and t not in self.asked
                  and t not in self.whole]  # fmt: skip
        old = sorted((t for t in chunks if now - sent_at[t] >= SHARE_AFTER),
                     key=sent_at.__getitem__)  # fmt: skip
        if len(old) < len(chunks):  # the others may take long too: look again
            self._share_soon()
        if not (laden or old):
            return
        free = self._free_cores(max(len(old), 1))
        if free <= 0:
            return
        if laden:  # they take that long at least: more workers are worth using (see Crowd)
            self.message_seconds = max(self.message_seconds or 0, SHARE_AFTER)
            self._shallow(laden)
        for task in old[:free]:
            self._ask_split(task, self.in_flight[task])

    def _free_cores(self, most):
        """Cores of the workers that may take the batch's tasks, with none of them: up to
        ``most``, the idle workers first -- not a pass over a thousand of them."""
        cores, runners, free = self.session.cores, self.runners, 0
        for workers in (self.crowd.idle, self.crowd.busy):
            for w in workers:
                n = cores.get(w)
                if (n is None or w in self.lost or w in self.resting
                        or (self.need and not self._eligible(w))):  # fmt: skip
                    continue
                free += max(0, n - runners[w])
                if free >= most:
                    return free
        return free

    def _ask_split(self, task, worker):
        channel = self.session.channels.open.get(worker)
        if channel is None or channel.closed:
            return
        self.asked.add(task)
        asyncio.ensure_future(self._split(task, worker, channel))

    async def _split(self, task, worker, channel):
        try:
            stop = await channel.call({"op": "split", "key": task.key})
        except Exception as e:  # it died or left: its tasks come back by other ways
            logger.debug("Could not split %s: %s", task.key, e)
            stop = None
        finally:
            self.asked.discard(task)
        if stop is None:
            self.whole.add(task)  # until it is sent again
        elif stop >= 0 and self.in_flight.get(task) == worker:  # not answered, nor sent
            self._split_off(task, stop, worker)  # elsewhere, since
        # every tail is taken: there may be more free cores; or the chunk is not there
        # yet (its inputs are on their way, and those queued behind it too, which no
        # give-back found): ask again in a moment
        if not self.queued():
            self._share_soon()

    def _split_off(self, task, stop, worker):
        """``task``'s ``worker`` stops it at ``stop``: queue the elements after that as
        a task of their own, for another core.  A message that has run this long is no
        tiny one: more workers are worth using (see :mod:`~distributed3.client.crowd`),
        and none may wait behind it on its worker."""
        rest = task.split(stop)
        if rest is None:
            return
        if self.error is not None:  # failed meanwhile (interrupted): they fail with it,
            rest.results.set_error(self.error, "", None)  # as fail() fails the queued
            if self.on_done is not None:
                self.on_done(rest.results)
            return
        now = asyncio.get_running_loop().time()
        ran = now - self.sent_at.get(task, now)
        self.message_seconds = max(self.message_seconds or 0, ran)
        if self.depth.get(worker, 1) > 1:
            self._shallow({worker})
        self.add([rest])
