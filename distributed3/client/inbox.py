"""Submits: the handle at once, from any thread; the task made on the loop, in bulk.

A ``pool.submit`` in a script's loop used to run the event loop once per call, to make
its task and hand it to the running batch.  Taking the loop, running it a turn and
giving it back cost more than the task's share of the batch did.  Now the caller makes
only what it needs at once -- the handle, and the pickled function, whose error is the
caller's to see now -- and queues the rest.  The loop makes the tasks of everything
queued meanwhile in one go, and the submits' :class:`~distributed3.client.feed.Feed`
sends them together::

    submit(f, 1) --> handle h1; (h1, f, args) queued --> the loop is woken, once
    submit(f, 2) --> handle h2; queued                   (for a whole burst)
    ...              while submits keep coming, the caller runs the loop a turn
                     each TURN_EVERY seconds (else the loop thread does, soon)
    on the loop: drain --> tasks of h1, h2, ... --> feed.add --> one message a worker
                 (one call alone, an idle worker: straight to it, see :mod:`.alone`)

A submit whose inputs are still being computed waits for them in a coroutine of its
own, and one whose keyword arguments are big enough to broadcast is made in one: it
holds up neither the caller nor the submits after it.  If the pool closes meanwhile,
its handle fails saying so.  ``asubmit`` and the ``concurrent.futures`` executor
queue here too, from the loop itself.

>>> handles = [submit_now(pool.session, pow, (2, i), {}) for i in range(3)]
>>> pool.gather(handles)
[1, 2, 4]
"""
import asyncio
import collections
from itertools import groupby

from ..exceptions import CommClosedError
from .alone import send_alone
from .feed import Feed
from .handles import RemoteData
from .options import DEFAULTS
from .tasks import (big_constant, element_recipes, element_tasks, fail_on_inputs,
                    function_bytes, funcname, make_tasks, message_base, pending_inputs)  # fmt: skip

__all__ = ["Inbox", "inbox", "submit_now", "submit_on_loop", "submits", "TURN_EVERY"]

TURN_EVERY = 0.0002  # s between the turns of the loop that a caller's submits run


def submits(session):
    """The :class:`~distributed3.client.feed.Feed` that ``session``'s submits join.

    >>> submits(pool.session) is submits(pool.session)
    True
    """
    if session.submits is None:
        session.submits = Feed(session, "submit", independent=True)
    return session.submits


def inbox(session):
    """``session``'s :class:`Inbox`, made on first use.

    >>> inbox(pool.session) is inbox(pool.session)
    True
    """
    if session.inbox is None:
        session.inbox = Inbox(session)
    return session.inbox


def submit_now(session, func, args, kwargs):
    """``pool.submit(func, *args, **kwargs)`` from a blocking caller: its handle, at
    once; while calls keep coming, the caller runs the loop a turn now and then.

    >>> submit_now(pool.session, pow, (2, 5), {}).get()
    32
    """
    session.loop_thread.check_caller()  # as any blocking call: not after a fork, ...
    box = inbox(session)
    handle = box.put(func, args, kwargs)
    box.keep_moving()
    return handle


async def submit_on_loop(session, func, args, kwargs):
    """``await pool.asubmit(func, *args, **kwargs)``: its handle, at once.

    >>> pool.session.sync(submit_on_loop(pool.session, pow, (2, 3), {})).get()
    8
    """
    return inbox(session).put(func, args, kwargs)


class Inbox:
    """Submitted calls queued for the loop, from any thread (see the module's docstring)."""

    def __init__(self, session):
        self.session = session
        self.queue = collections.deque()  # (handle, func, name, function bytes, args, kwargs)
        self._woken = False  # a drain is due on the loop

    def put(self, func, args, kwargs):
        """The pending handle of ``func(*args, **kwargs)``, whose task the loop makes and
        runs soon; raises at once if the pool is closed or ``func`` cannot be sent."""
        session = self.session
        session.check()
        name = funcname(func)
        fbytes = function_bytes(func, name)
        handle = RemoteData(session.new_key(name), session, status="pending")
        self.queue.append((handle, func, name, fbytes, args, kwargs))
        if not self._woken:
            self._woken = True
            loop = session.loop
            try:
                if asyncio._get_running_loop() is loop:
                    loop.call_soon(self.drain)
                else:
                    loop.call_soon_threadsafe(self.drain)
            except BaseException:  # Ctrl-C, a closed loop: the next call wakes it again
                self._woken = False
                raise
        return handle

    def keep_moving(self):
        """From a blocking caller: run the loop a turn if no caller has run it for
        ``TURN_EVERY`` seconds (taking it from the loop thread, if that runs it), so
        that queued calls go and replies come in while the caller goes on submitting;
        the loop thread takes over once it stops."""
        loop_thread = self.session.loop_thread
        if asyncio._get_running_loop() is None and loop_thread.unattended() >= TURN_EVERY:
            self.session.sync(self._turn())

    async def _turn(self):
        self.drain()
        # the batch's runners take the tasks in the next step, and send them in the one
        # after (see Channel.request): those steps too, before the caller goes on
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def drain(self):
        """On the loop: make the tasks of what is queued and hand them to the feed."""
        self._woken = False  # first: a call queued from now on wakes the loop again
        session, queue = self.session, self.queue
        entries = []
        while queue:
            entry = queue.popleft()
            if entry[0].status == "pending":  # not deleted meanwhile
                entries.append(entry)
        if session.status != "running":
            for entry in entries:
                entry[0].set_error(_closed(session), "")
            return
        handles, tasks = [], []
        # calls of one function without keywords, one after the other, are made together;
        # a call with keywords (a dict of its own) alone
        for _, run in groupby(entries, key=lambda e: (e[3], id(e[5]) if e[5] else None)):
            for handle, made in self._made(list(run)):
                handles.append(handle)
                tasks += made
        if len(tasks) == 1 and not tasks[0].inputs and send_alone(session, tasks[0], "submit"):
            return  # one call alone, an idle worker: straight there (see alone.py)
        if tasks:
            submits(session).add(tasks, handles)

    def _made(self, entries):
        """``(handle, tasks)`` of calls of one function with the same keyword arguments,
        made now; a call that failed already (an input did, or it could not be made) has
        none, and those that wait -- for their inputs, or for their keyword arguments to
        be broadcast -- go on in the background."""
        session = self.session
        _, _, name, fbytes, _, kwargs = entries[0]
        if any(big_constant(v) for v in kwargs.values()):  # a run of one call, then
            asyncio.ensure_future(self._make_later(entries[0]))
            return []
        made = [e[0] for e in entries]
        try:
            base, kw_handles = message_base(session, fbytes, kwargs)
            _, recipes = element_recipes(session, name, base, [e[4] for e in entries],
                                         kw_handles, DEFAULTS, made=made)  # fmt: skip
        except Exception as e:  # what the caller sees as the task's error: its alone
            if len(entries) == 1:
                made[0].set_error(e, "")
                return []
            return [pair for entry in entries for pair in self._made([entry])]
        session.adopt(h.key for h in made)
        out = []
        for pair in recipes:  # those whose inputs failed already have no recipe
            if pending_inputs([pair]):
                asyncio.ensure_future(self._after_inputs(base, pair))
            else:
                out.append((pair[0], element_tasks(base, [pair], 1, DEFAULTS)))
        return out

    async def _after_inputs(self, base, pair):
        """Send the task of ``pair`` (handle, recipe) once its inputs are done; it fails
        as they did if one failed or was deleted meanwhile."""
        handle, recipe = pair
        for h in pending_inputs([pair]):
            await h.wait()
        if not fail_on_inputs(handle, recipe.inputs):
            self._hand_over(handle, element_tasks(base, [pair], 1, DEFAULTS))

    async def _make_later(self, entry):
        handle, func, _, _, args, kwargs = entry
        try:
            _, tasks = await make_tasks(self.session, func, [args], kwargs, handles=[handle])
        except Exception as e:
            handle.set_error(e, "")
            return
        self._hand_over(handle, tasks)

    def _hand_over(self, handle, tasks):
        """``tasks`` of ``handle``, made in the background, to the feed; once the pool
        closed, ``handle`` fails saying so (nothing else would tell it)."""
        if handle.status != "pending":
            return
        if self.session.status != "running":
            handle.set_error(_closed(self.session), "")
            return
        submits(self.session).add(tasks, [handle])


def _closed(session):
    return session.broken or CommClosedError(f"{session!r} closed before the task ended")
