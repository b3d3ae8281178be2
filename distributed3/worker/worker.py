"""The worker: holds data, computes on it, and serves it to peers.

::

    client --compute(key, function, args, who_has)--> worker
                                                        |  inputs it lacks:
                                                        |--get_data(keys)--> peer worker
                                                        |  runs function in its thread pool
                                                        |--add_keys([key])--> center
    client <--{"key", "nbytes"} or {"exception", "traceback"}--

    client or peer --get_data / update_data / delete_data--> worker

Tasks run in ``ncores`` threads, so the event loop stays free to serve peers, the
center and new requests while user code runs.  Key reports to the center are batched:
one message carries every key finished since the last one went out.  A task's reply
does not wait for it (the client learns where its results are from the reply), so a
task costs one round trip; ``update_data`` waits for the center's acknowledgement, so
scattered keys are known at once.  A small result (``execute.INLINE_BYTES`` or less,
pickled) also travels in the reply; the worker keeps it all the same.  The reply
leaves from the task thread itself, once the loop has the results.  Tasks queued for a
client that went, or cancelled by it, are dropped before they start.

>>> import asyncio
>>> from distributed3.center import Center
>>> from distributed3.core import rpc
>>> async def demo():
...     center = await Center().start(port=0)
...     worker = await Worker(center.address, ncores=1).start(port=0)
...     async with rpc(worker.address) as w:
...         await w.update_data(data={"x": 20})
...         values = await w.get_data(keys=["x"])
...     await worker.close(); await center.close()
...     return values
>>> asyncio.run(demo())
{'x': 20}
"""
import asyncio
import functools
import logging
import os
import time

from ..core.protocol import loads_function, sizeof
from ..core.server import REPLIED, ConnectionPool, Server
from ..exceptions import (
    MissingDataError,
    StateMissingError,
    WorkerRetiringError,
)
from ..fetch import fetch_from_holders
from ..keys import Parts, element_of, split_element, substitute
from ..utils import format_address, parse_address
from .center_link import CenterLink
from .leaving import Leaving
from .execute import run_guarded, stateful_call
from .runner import TaskRunner
from .monitor import MemoryMonitor
from .store import SpillStore, memory_info, parse_memory_limit

logger = logging.getLogger(__name__)


_MISSING = object()


class Worker(CenterLink, Leaving, Server):
    """A data-holding compute server that registers with a center.

    ::

        worker = await Worker("127.0.0.1:8787", ncores=4, secret=b"...").start(port=0)
        worker.data              # {key: value} held here
        await worker.close()     # tells the center it is leaving

    or from the command line: ``dworker 127.0.0.1:8787``.
    """

    def __init__(self, center, *, ncores=None, name=None, heartbeat_interval=1.0,
                 handoff_timeout=30.0, lifetime=None, max_tasks=None, resources=None,
                 memory_limit=None, memory_target=0.6, memory_spill=0.7, memory_pause=0.8,
                 spill_directory=None, **kwargs):  # fmt: skip
        handlers = {
            "compute": self.compute,
            "compute_chunk": self.compute_chunk,
            "stateful_init": self.stateful_init,
            "stateful_update": self.stateful_update,
            "stateful_close": self.stateful_close,
            "get_data": self.get_data,
            "update_data": self.update_data,
            "fetch_data": self.fetch_data,
            "delete_data": self.delete_data,
            "cancel": self.cancel,
            "split": self.split,
            "keys": self.get_keys,
            "info": self.info,
            "terminate": self.terminate,
            "retire": self.retire_asked,
        }
        super().__init__(handlers, name=name, **kwargs)
        self.center_address = parse_address(center)
        self.ncores = int(ncores or os.cpu_count() or 1)
        self.heartbeat_interval = heartbeat_interval
        self.handoff_timeout = handoff_timeout
        self.lifetime = lifetime
        self.max_tasks = max_tasks
        self.resources = dict(resources or {})
        self.retiring = None  # why, once retiring
        self.waiting = 0  # tasks waiting for their inputs
        self.memory_limit = parse_memory_limit(memory_limit)
        # under a limit, the least recently used results spill to disk (see store.py)
        self.data = ({} if self.memory_limit is None else
                     SpillStore(int(memory_target * self.memory_limit), spill_directory))
        self.nbytes = {}
        self.stateful = {}  # name -> instance of a user's WorkerInterface class
        self.stateful_version = {}  # name -> updates applied
        self.tasks_done = 0
        self.peer_bytes_in = 0
        self.bytes_served = 0  # of the values get_data sent, to peers and clients
        self.runner = TaskRunner(self.ncores, self._store, self.memory_limit)
        self.memory_thresholds = {"spill": memory_spill, "pause": memory_pause}
        self.monitor = None  # a MemoryMonitor, once started under a limit
        self._monitoring = None
        self.executor = self.runner.executor  # also for stateful instances' calls
        self.peers = ConnectionPool(secret=self.secret, limits=self.limits, tls=self.tls)
        self.owners = {}  # key -> the client a result was computed for (for the center)
        self._init_center_link()
        self._registered = asyncio.Event()
        self.finished = asyncio.Event()

    async def start(self, host="127.0.0.1", port=0, sockets=None):
        await super().start(host, port, sockets)
        logger.info("Start worker at %s", format_address(self.address))
        await self._register_when_up(self.center_wait)
        logger.info("Register with center at %s", format_address(self.center_address))
        self._center_task = asyncio.ensure_future(self._center_loop())
        if self.memory_limit is not None:
            self.monitor = MemoryMonitor(self.memory_limit, self.data, self.runner,
                                         format_address(self.address), **self.memory_thresholds)
            self._monitoring = asyncio.ensure_future(self._watch_memory())
        if self.lifetime:
            why = f"its lifetime of {self.lifetime} s is over"
            asyncio.get_running_loop().call_later(self.lifetime, lambda: self.retire(why))
        return self

    async def _watch_memory(self):
        while True:
            await asyncio.sleep(self.monitor.interval)
            self.monitor.check()

    async def close(self, report=True, handoff=True):
        """Leave the cluster: hand the keys only we hold to peers (when ``handoff``),
        tell the center (when ``report``), stop serving, stop threads."""
        if self._closing:
            return
        if handoff and self.handoff_timeout and report and self.data and self._center_comm:
            try:
                await asyncio.wait_for(self._hand_off(), self.handoff_timeout)
            except Exception as e:
                logger.warning("Could not hand all keys to peers before leaving: %s", e)
        self._closing = True
        if self._center_task is not None:
            self._center_task.cancel()
        if self._monitoring is not None:
            self._monitoring.cancel()
        comm, self._center_comm = self._center_comm, None
        if comm is not None and report and not comm.closed:
            try:
                await asyncio.wait_for(self._call_center(comm, "unregister"), 2)
            except Exception as e:
                logger.info("Could not tell center we are leaving: %s", e)
        if comm is not None:
            comm.close()
        await super().close()
        await self.peers.close()
        self.runner.close()
        if isinstance(self.data, SpillStore):
            self.data.close()
        logger.info("Worker at %s closed", format_address(self.address))
        self.finished.set()

    # -- handlers --------------------------------------------------------------

    def compute(self, comm, key, function=None, args=(), kwargs=None, who_has=None,
                      seed=None, keep=(), stateful=None, owner=None,
                      values_only=False):  # fmt: skip
        """Run ``function(*args, **kwargs)`` with remote inputs filled in; keep the result as ``key``.

        ``seed`` seeds ``random`` (and ``numpy.random``) for this task; ``keep``
        names fetched inputs to keep here (constants shared by many tasks);
        ``stateful`` names an instance made by ``stateful_init`` whose ``run``
        is the function; ``owner`` is the client the result belongs to, which the
        center learns with the key's report; ``values_only``: see :meth:`compute_chunk`.
        """
        return self.compute_chunk(comm, [key], function, [args], kwargs, who_has,
                                  None if seed is None else [seed], keep, stateful, owner,
                                  lone=True, values_only=values_only)  # fmt: skip

    def compute_chunk(self, comm, keys=None, function=None, args_list=(), kwargs=None,
                            who_has=None, seeds=None, keep=(), stateful=None,
                            owner=None, lone=False, group=None, over=None,
                            single_args=None, budget=None, values_only=False):  # fmt: skip
        """Run one function over many argument tuples in one message (``single_args``:
        over many arguments, one per task, ``f(x)`` rather than ``f(*args)``).

        Each result is kept under its own key (``keys``), or all of them together as one
        :class:`~distributed3.keys.Parts` entry under ``group``, whose element ``i`` is
        then addressed as ``group#i``: one key for the center to track, not thousands.
        ``over``, ``[key, start, stop]``, names such a chunk (held here, or where
        ``who_has`` says) whose elements ``start`` to ``stop`` are the arguments, one
        each.  Replies with lists in the order of the
        arguments::

            {"nbytes": [bytes or None], "pickled": [small result pickled, or None],
             "errors": {position: {"exception", "traceback"}}, "duration": seconds}

        (with ``group``, ``pickled`` is the whole list of results pickled at once when
        every one is small, else ``None``; ``lone``: the reply of :meth:`compute`
        instead, see :func:`~.execute.lone_reply`.)  The reply leaves from the task
        thread, as soon as the loop holds the results (see :mod:`.runner`).

        ``budget`` (seconds): the elements run one at a time, and none starts once
        the chunk has run that long; the reply then says how many ran (``"ran"``),
        and the pool sends the rest elsewhere (tiny tasks sent together, see
        :mod:`distributed3.client.bundle`).  ``values_only`` (a stream's tasks, whose
        values are all the pool wants): a result small enough to come with the reply
        is not kept here, nor reported to the center.
        """
        if self.retiring is not None:
            raise WorkerRetiringError(
                f"worker {format_address(self.address)} is retiring ({self.retiring})"
            )
        spread = single_args is None  # each task's arguments are a tuple to spread
        args_list = args_list if spread else single_args
        keys = keys if group is None else group
        if stateful is not None:
            function = self._stateful_function(stateful)
        if not who_has:  # nothing to wait for: queued now, answered from its thread
            self.runner.launch(comm, keys, function, args_list, spread, kwargs, seeds, owner,
                               lone, budget, values_only)  # fmt: skip
            return REPLIED
        return self._compute_with_inputs(comm, keys, function, args_list, spread, kwargs,
                                         who_has, seeds, keep, owner, lone, over,
                                         values_only)  # fmt: skip

    def _stateful_function(self, stateful):
        instance = self.stateful.get(stateful["name"])
        if instance is None or self.stateful_version[stateful["name"]] < stateful["version"]:
            raise StateMissingError(
                f"worker {format_address(self.address)} has no up-to-date instance "
                f"{stateful['name']!r}"
            )
        return functools.partial(stateful_call, instance)

    async def _compute_with_inputs(self, comm, keys, function, args_list, spread, kwargs,
                                   who_has, seeds, keep, owner, lone, over,
                                   values_only=False):  # fmt: skip
        self.waiting += 1  # for inputs: busy, for retire
        try:
            values = await self._gather_inputs(who_has)
        finally:
            self.waiting -= 1
        kept = {k: values[k] for k in keep if k in values and k not in self.data}
        if kept:
            await self.update_data(comm, kept)
        if over is not None:
            args_list, spread = self._chunk_slice(values, *over), False
        else:
            args_list = [substitute(args, values) for args in args_list]
        kwargs = substitute(kwargs, values) if kwargs else kwargs
        del values
        self.runner.launch(comm, keys, function, args_list, spread, kwargs, seeds, owner, lone,
                           values_only=values_only)  # fmt: skip
        return REPLIED

    def _chunk_slice(self, values, key, start, stop):
        parts = values[key]
        if type(parts) is not Parts or parts.gone.intersection(range(start, stop)):
            raise MissingDataError(f"worker {format_address(self.address)} found chunk "
                                   f"{key!r} with elements missing")  # fmt: skip
        return parts[start:stop]

    def catch_up(self):
        """On the loop: keep the results threads finished, queue their report, reply."""
        self.runner.catch_up()

    @property
    def active(self):
        """Tasks running, queued, or waiting for their inputs here."""
        return self.runner.active + self.waiting

    def _store(self, keys, values, errors, sizes, owner):
        self.tasks_done += len(values)
        if self.max_tasks and self.tasks_done >= self.max_tasks:  # before the next message
            self.retire(f"it has run {self.tasks_done} tasks (--max-tasks {self.max_tasks})")
        report = {}
        if type(keys) is str:  # one entry for the whole chunk (sizes: its total, or a list)
            self.data[keys] = Parts(values, gone=errors)
            total = sizes if type(sizes) is int else sum(n for n in sizes if n is not None)
            self.nbytes[keys] = report[keys] = total
        else:
            for i, (key, value, n) in enumerate(zip(keys, values, sizes)):
                if i not in errors:
                    self.data[key] = value
                    self.nbytes[key] = report[key] = n
        if report:
            # no round trip to the center per task: the report goes with the next batch,
            # and the client already knows where the results are
            self._queue_report(add=report, owner=owner)

    # -- stateful instances ------------------------------------------------------

    async def stateful_init(self, comm, name, cls, args=(), kwargs=None, updates=()):
        """Make ``cls(*args, **kwargs)`` once here, then replay ``updates`` in order; an
        instance made already (its pool saw this worker join again, after a center
        restart) is kept, and given only the updates it has not had."""
        loop = asyncio.get_running_loop()
        instance, done = self.stateful.get(name), self.stateful_version.get(name, 0)
        if instance is None or done > len(updates):
            instance, done = None, 0

        def make():
            made = instance if instance is not None else loads_function(cls)(*args, **(kwargs or {}))
            for up_args, up_kwargs in updates[done:]:
                made.handle_update(*up_args, **up_kwargs)
            return made

        self.stateful[name] = await loop.run_in_executor(self.executor, run_guarded, make)
        self.stateful_version[name] = len(updates)
        return len(updates)

    async def stateful_update(self, comm, name, args=(), kwargs=None, version=None):
        """Pass an update to the instance ``name``; ``version`` is its number, counted from 1."""
        instance = self.stateful.get(name)
        if instance is None or self.stateful_version[name] != version - 1:
            raise StateMissingError(f"{name!r} is not at version {version - 1} here")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self.executor, run_guarded, lambda: instance.handle_update(*args, **(kwargs or {}))
        )
        self.stateful_version[name] = version
        return version

    def stateful_close(self, comm, name):
        """Drop the instance ``name``, calling its ``close()`` if it has one."""
        instance = self.stateful.pop(name, None)
        self.stateful_version.pop(name, None)
        if instance is not None and hasattr(instance, "close"):
            instance.close()
        return instance is not None

    async def _gather_inputs(self, who_has):
        """Values of the keys in ``who_has``: local ones, then fetched from peers."""
        values, missing = {}, {}
        for k, ws in who_has.items():
            value = element_of(self.data, k, _MISSING)
            if value is _MISSING:
                missing[k] = {parse_address(w) for w in ws}
            else:
                values[k] = value
        if missing:
            start, center = time.time(), self.peers(self.center_address)
            fetched, lost = await fetch_from_holders(missing, self.peers, center.who_has,
                                                     exclude={self.address})  # fmt: skip
            if lost:
                keys = ", ".join(map(repr, sorted(lost, key=str)))
                raise MissingDataError(f"worker {format_address(self.address)} could not find "
                                       f"inputs {keys} on any live worker")  # fmt: skip
            nbytes = sum(sizeof(v) for v in fetched.values())
            self.peer_bytes_in += nbytes
            if self.runner.telemetry is not None:
                self.runner.telemetry.transfer(start, time.time(), nbytes, len(fetched))
            values.update(fetched)
        return values

    def cancel(self, comm, keys, give_back=False):
        """Drop the queued tasks of ``keys`` no thread started (their client was
        interrupted, or will run them elsewhere: ``give_back``); how many."""
        return self.runner.cancel(keys=keys, give_back=give_back)

    def split(self, comm, key, rest=False):
        """Stop the chunk ``key`` (a chunk's key, or its first element's) at an element
        it has not started, for another core to run half the rest (all of it, with
        ``rest``): its new end, or ``None`` (see :meth:`~.runner.TaskRunner.split`)."""
        return self.runner.split(key, rest)

    def connection_closed(self, comm):
        """Drop the queued tasks whose replies were to go there: their client is gone."""
        if self.runner.cancel(connection=comm):
            logger.info("Dropped the queued tasks of %s: it went", format_address(comm.peer))

    def get_data(self, comm, keys):
        """``{key: value}`` for ``keys``; a missing key is an error naming this worker."""
        out = {}
        peek = getattr(self.data, "peek", None)  # a SpillStore: spilled values stay spilled
        for k in keys:
            if peek is not None and k in self.data:
                out[k] = value = peek(k)
            else:
                out[k] = value = element_of(self.data, k, _MISSING)
            if value is _MISSING:
                raise MissingDataError(
                    f"worker {format_address(self.address)} does not hold key {k!r}"
                )
            self.bytes_served += self.nbytes.get(k) or 0
        return out

    async def update_data(self, comm, data, report=True, owner=None):
        """Store ``data`` (``{key: value}``); returns ``{"nbytes": {key: bytes}}``.

        ``owner``: the client that scattered it, which the center hears with the keys --
        and again from this worker if the center restarts, so that the keys go with
        their owner if it never comes back."""
        nbytes = {k: sizeof(v) for k, v in data.items()}
        self.data.update(data)
        self.nbytes.update(nbytes)
        if owner is not None:
            self.owners.update(dict.fromkeys(data, owner))
        if report:
            await self._report(add=nbytes, owner=owner)
        return {"nbytes": nbytes}

    async def fetch_data(self, comm, who_has):
        """Copy keys from peers (``{key: [holders]}``) and keep them; returns their sizes."""
        values = await self._gather_inputs(who_has)
        return await self.update_data(comm, values)

    async def delete_data(self, comm, keys, report=True):
        """Forget ``keys``; returns how many were held here.  An element of a chunk's
        results (``G#i``) held within its chunk is dropped from it.

        ``report=False`` is for a caller that already forgot them (the center, when
        it releases keys): no report goes back, and none of their additions either.
        """
        dropped = sum(self._drop_element(k) for k in keys if k not in self.data)
        held = [k for k in keys if k in self.data]
        for k in held:
            del self.data[k]
            self.nbytes.pop(k, None)
        if report and held:
            await self._report(remove=held)
        elif held:
            for k in held:
                self._pending_add.pop(k, None)
                self.owners.pop(k, None)
        return len(held) + dropped

    def _drop_element(self, key):
        found = split_element(key)
        parts = None if found is None else self.data.get(found[0])
        if type(parts) is not Parts:
            return False
        value = parts[found[1]] if found[1] < len(parts) else None
        if not parts.drop(found[1]):
            return False
        self.nbytes[found[0]] = max(0, self.nbytes.get(found[0], 0) - sizeof(value))
        return True

    def get_keys(self, comm):
        """The keys held here."""
        return list(self.data)

    def info(self, comm=None):
        """Counters: ``nkeys``, ``nbytes``, ``tasks_done``, ``task_messages`` (compute
        requests, however many tasks each carried), ``peer_bytes_in``, ``bytes_in``,
        ``frames_in`` (messages read, however many requests each carried); ``rss``,
        ``memory_limit`` (or None), ``managed_bytes`` (results in memory) and
        ``spilled_bytes`` (on disk), ``paused`` (near the limit: no new task starts) and
        ``pauses`` (how often); ``active`` (tasks running, queued, or fetching their
        inputs); and ``pid``, ``ncores``, ``resources``, ``name``."""
        return {
            "pid": os.getpid(),
            "ncores": self.ncores,
            "resources": self.resources,
            "nkeys": len(self.data),
            "nbytes": sum(self.nbytes.values()),
            "tasks_done": self.tasks_done,
            "task_messages": self.counters["compute"] + self.counters["compute_chunk"],
            "active": self.active,
            "peer_bytes_in": self.peer_bytes_in,
            "bytes_served": self.bytes_served,
            "bytes_in": self.counters["bytes_in"],
            "frames_in": self.counters["frames_in"],
            **memory_info(self.data, self.memory_limit, sum(self.nbytes.values())),
            "paused": self.runner.paused is not None,
            "pauses": self.monitor.pauses if self.monitor else 0,
            "name": self.name,
        }

    def terminate(self, comm):  # shut this worker down after replying
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.close()))
        return "OK"
