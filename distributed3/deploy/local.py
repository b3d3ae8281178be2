"""A local cluster: one center process, which forks the workers, beside this one.

``Pool()`` uses this.  This process opens the center's listening socket and
starts ``python -m distributed3.deploy.cli center --workers N`` on it; that interpreter
forks its workers before it serves, so one interpreter start-up brings up the
whole cluster and no port is ever guessed.  The center's bookkeeping of every
result runs beside the client, not on its event loop; a worker that crashes
takes nothing else down.  Everything is bound to loopback and shares a random
secret passed through the environment, never on the command line.  The cluster
gets the client's ``sys.path``, so functions from the client's own modules load
on the workers as they would in ``multiprocessing``.  The center watches this
process and its workers watch the center (workers added by ``start_worker`` watch
this process): whichever dies, what it started ends.

>>> import asyncio
>>> async def demo():
...     cluster = LocalCluster(n_workers=1)
...     await cluster.start()
...     n = len(await cluster.registered())
...     await cluster.close()
...     return n
>>> asyncio.run(demo())
1
"""
import asyncio
import logging
import os
import secrets
import socket
import sys
import threading
import time
import weakref

from ..core.security import normalize_secret
from ..core.server import rpc
from ..exceptions import CommClosedError, ConnectionBrokenError
from ..utils import format_address
from .cluster import Control
from .nanny import worker_environment
from .procs import kill, spawn, stop, terminate, worker_command

logger = logging.getLogger(__name__)


class LocalCluster(Control):
    """A center process and the ``n_workers`` worker processes it forks, on loopback.

    ``n_workers`` defaults to the number of cores; each worker gets
    ``ncores`` threads (default 1).  Like the deployed clusters
    (:class:`~.cluster.Cluster`) it can ``scale(n)`` and ``adapt(minimum, maximum)``,
    from any thread but the pool's loop: ``Pool().cluster.scale(4)``.  Its ``start``
    and ``close`` are coroutines: the pool that owns it runs them.
    """

    def __init__(self, n_workers=None, ncores=1, secret=None, host="127.0.0.1", timeout=30,
                 memory_limit=None):  # fmt: skip
        self.n_workers = int(n_workers if n_workers is not None else (os.cpu_count() or 1))
        self.ncores = ncores
        self.memory_limit = memory_limit  # each worker's (see worker/store.py)
        self.secret = normalize_secret(secret) or secrets.token_hex(32).encode()
        self.host = host
        self.timeout = timeout
        self.center_address = None
        self.center_proc = None  # it forks the first n_workers workers
        self.procs = []  # workers added later by start_worker()
        self._children = []  # every process started here, for the finalizer
        self._finalizer = None
        self.id = secrets.token_hex(3)
        self.retiring = {}  # worker address -> when it was asked to retire
        self._lock = threading.RLock()

    worker_cores = property(lambda self: self.ncores)

    def __repr__(self):
        where = format_address(self.center_address) if self.center_address else None
        return f"<LocalCluster center={where} workers={self.n_workers + len(self.procs)}>"

    async def start(self):
        """Start the center and its workers; return when all registered."""
        # a script that ends without close(): stop the processes as close() would, so
        # its workers leave quietly instead of warning that their center vanished
        self._finalizer = weakref.finalize(self, terminate, self._children)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.create_server((self.host, 0), family=family, backlog=1024) as listener:
            self.center_address = (self.host, listener.getsockname()[1])
            fd = listener.fileno()
            cmd = [sys.executable, "-m", "distributed3.deploy.cli", "center", "--host", self.host,
                   "--listen-fd", str(fd), "--parent-pid", str(os.getpid()),
                   "--workers", str(self.n_workers), "--worker-ncores", str(self.ncores),
                   "--log-level", "warning", "--dashboard-port", "0"]  # fmt: skip
            if self.memory_limit is not None:
                cmd += ["--worker-memory-limit", str(self.memory_limit)]
            # a session of its own: Ctrl-C at the client's terminal interrupts the client's
            # call, not the cluster; the center still ends when this process does
            self.center_proc = spawn(cmd, secret=self.secret, env=self._env(), pass_fds=(fd,),
                                     start_new_session=True)  # fmt: skip
            self._children.append(self.center_proc)
            self._center = self.center_proc  # call_center gives up at once when it died
        await self.wait_for_workers(self.n_workers)
        return self

    def _env(self):
        # the client's import path, so functions from its own modules load on the workers
        return {"PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
                **worker_environment(self.ncores)}

    def start_worker(self):
        """Start one more worker process (its own interpreter, under a nanny)."""
        proc_name = f"local-{self.id}-{len(self.procs)}"
        cmd = worker_command(
            self.center_address, "--host", self.host, "--port", "0",
            "--ncores", str(self.ncores), "--parent-pid", str(os.getpid()),
            "--log-level", "warning", "--no-handoff", "--name", proc_name,
        )  # fmt: skip
        proc = spawn(cmd, secret=self.secret, env=self._env(), start_new_session=True)
        proc.worker_name = proc_name
        self.procs.append(proc)
        self._children.append(proc)
        return proc

    async def registered(self):
        """``{worker: cores}`` of the workers registered with the center now."""
        async with rpc(self.center_address, secret=self.secret, timeout=self.timeout) as center:
            return await center.ncores()

    async def wait_for_workers(self, n):
        """Return once ``n`` workers registered; raise if a process died or time ran out."""
        deadline = time.monotonic() + self.timeout
        async with rpc(self.center_address, secret=self.secret, timeout=self.timeout) as center:
            while True:
                self._check_alive()
                try:
                    registered = len(await center.ncores())
                except (ConnectionBrokenError, CommClosedError, TimeoutError):
                    await self.center_exit_code(2.0)
                    self._check_alive()  # it died: say so, with its exit status
                    raise
                if registered >= n:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"only {registered} of {n} local workers registered within "
                        f"{self.timeout} s"
                    )
                await asyncio.sleep(0.01)

    def _check_alive(self):
        dead = [p for p in self._children if p.poll() is not None]
        if dead:
            what = "center" if dead[0] is self.center_proc else "worker"
            raise RuntimeError(
                f"the local {what} process exited with code {dead[0].returncode} before "
                "the cluster was up (its error is on stderr above)"
            )

    async def center_exit_code(self, timeout=0):
        """The center process's exit status, waiting up to ``timeout`` s; None while it runs."""
        deadline = time.monotonic() + timeout
        while self.center_proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.center_proc.poll()

    async def close(self, timeout=5):
        """Stop adapting; SIGTERM every worker (they leave cleanly), then the center (it
        stops the ones it forked); kill stragglers."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop_adapting)
        await stop(self.procs, timeout)
        await stop([self.center_proc] if self.center_proc else [], timeout * 2)

    # -- scaling, from a thread other than the pool's loop ------------------------------

    def size(self):
        """Workers registered or starting, not counting those retiring."""
        staying, pending = self._census()
        return len(staying) + len(pending)

    def _census(self):
        """``(registered, not retiring: {address: info}, started here and not registered
        yet: [process])``."""
        workers = self.call_center("workers")
        self.retiring = {a: t for a, t in self.retiring.items() if a in workers}
        names = {info.get("name") for info in workers.values()}
        pending = [p for p in self.procs if p.poll() is None and p.worker_name not in names]
        return {a: i for a, i in workers.items() if a not in self.retiring}, pending

    def scale(self, n):
        """Have ``n`` workers: start more processes, or retire the workers holding least
        (they hand their keys to the others first).

        >>> with Pool(n_workers=1) as pool:                    # doctest: +SKIP
        ...     pool.cluster.scale(3)
        ...     pool.wait_for_workers(3)
        """
        self._scale_asked()
        with self._lock:
            staying, pending = self._census()
            have = len(staying) + len(pending)
            for _ in range(n - have):
                self.start_worker()
            if n < have:
                extra = have - n
                for proc in pending[:extra]:  # not registered yet: nothing to hand over
                    proc.terminate()
                least = sorted(staying, key=lambda a: staying[a]["nbytes"])
                leaving = least[:max(extra - len(pending), 0)]
                for address in leaving:
                    self.retiring[address] = time.monotonic()
                self._ask_to_retire(leaving)

    def kill(self):
        """Kill every process at once (used when the owner vanishes); the center's workers
        see it go and end within a second."""
        kill(self._children)
