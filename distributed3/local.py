"""A local cluster: a center process and worker processes beside this one.

``Pool()`` uses this.  The center and each worker are their own interpreters
(``python -m distributed3.cli center|worker``), bound to loopback and sharing a
random secret passed through the environment, never on the command line.  This
process opens the center's listening socket and hands it over, so the workers
start at the same moment as the center and no port is ever guessed.  The
center's bookkeeping of every result runs beside the client, not on its event
loop.  Workers get the client's ``sys.path``, so functions from the client's own
modules load there as they would in ``multiprocessing``.  Every process watches
this one and exits if it dies, so none are left behind.

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
import signal
import socket
import subprocess
import sys
import time
import weakref

from .core import rpc
from .procs import spawn, worker_command
from .utils import format_address
from .security import normalize_secret

logger = logging.getLogger(__name__)


def _kill(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class LocalCluster:
    """A center (in-process) and ``n_workers`` worker processes on loopback.

    ``n_workers`` defaults to the number of cores; each worker gets
    ``ncores`` threads (default 1).
    """

    def __init__(self, n_workers=None, ncores=1, secret=None, host="127.0.0.1", timeout=30):
        self.n_workers = int(n_workers if n_workers is not None else (os.cpu_count() or 1))
        self.ncores = ncores
        self.secret = normalize_secret(secret) or secrets.token_hex(32).encode()
        self.host = host
        self.timeout = timeout
        self.center_address = None
        self.center_proc = None
        self.procs = []  # the workers
        self._children = []  # the center and the workers, for the finalizer
        self._finalizer = None

    def __repr__(self):
        where = format_address(self.center_address) if self.center_address else None
        return f"<LocalCluster center={where} workers={len(self.procs)}>"

    async def start(self):
        """Start the center and every worker at once; return when all registered."""
        self._finalizer = weakref.finalize(self, _kill, self._children)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.create_server((self.host, 0), family=family, backlog=1024) as listener:
            self.center_address = (self.host, listener.getsockname()[1])
            fd = listener.fileno()
            cmd = [sys.executable, "-m", "distributed3.cli", "center", "--host", self.host,
                   "--listen-fd", str(fd), "--parent-pid", str(os.getpid()),
                   "--log-level", "warning"]  # fmt: skip
            self.center_proc = spawn(cmd, secret=self.secret, pass_fds=(fd,))
            self._children.append(self.center_proc)
        for _ in range(self.n_workers):  # they queue on the socket until the center is up
            self.start_worker()
        await self.wait_for_workers(self.n_workers)
        return self

    def start_worker(self):
        """Start one more worker process."""
        cmd = worker_command(
            self.center_address, "--host", self.host, "--port", "0",
            "--ncores", str(self.ncores), "--parent-pid", str(os.getpid()),
            "--log-level", "warning", "--no-handoff",
        )  # fmt: skip
        # the client's import path, so functions from its own modules load on the workers
        path = os.pathsep.join(p or os.getcwd() for p in sys.path)
        proc = spawn(cmd, secret=self.secret, env={"PYTHONPATH": path})
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
                dead = [p for p in self._children if p.poll() is not None]
                if dead:
                    what = "center" if dead[0] is self.center_proc else "worker"
                    raise RuntimeError(
                        f"the local {what} process exited with code {dead[0].returncode} "
                        "before the cluster was up"
                    )
                registered = len(await center.ncores())
                if registered >= n:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"only {registered} of {n} local workers registered within "
                        f"{self.timeout} s"
                    )
                await asyncio.sleep(0.01)

    async def close(self, timeout=5):
        """SIGTERM every worker (they leave cleanly), then the center; kill stragglers."""
        await self._stop(self.procs, timeout)
        await self._stop([self.center_proc] if self.center_proc else [], timeout)

    async def _stop(self, procs, timeout):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        _kill(procs)

    def kill(self):
        """Kill every process at once (used when the owner vanishes)."""
        _kill(self._children)
