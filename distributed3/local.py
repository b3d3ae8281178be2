"""A local cluster: a center in this process and worker processes beside it.

``Pool()`` uses this.  The center runs on the caller's event loop (it only
holds metadata); each worker is its own interpreter started with
``python -m distributed3.cli worker``, bound to loopback and sharing a random
secret passed through the environment, never on the command line.  Workers
get the client's ``sys.path``, so functions from the client's own modules
load there as they would in ``multiprocessing``.  Workers
watch this process and exit if it dies, so none are left behind.

>>> import asyncio
>>> async def demo():
...     cluster = LocalCluster(n_workers=1)
...     await cluster.start()
...     n = len(cluster.center.ncores)
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
import subprocess
import sys
import time
import weakref

from .center import Center
from .procs import spawn, worker_command
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
        self.center = None
        self.procs = []
        self._finalizer = None

    def __repr__(self):
        return f"<LocalCluster center={self.center_address} workers={len(self.procs)}>"

    @property
    def center_address(self):
        return self.center.address if self.center else None

    async def start(self):
        """Start the center, then every worker at once; return when all registered."""
        self.center = await Center(secret=self.secret).start(self.host, 0)
        self._finalizer = weakref.finalize(self, _kill, self.procs)
        for _ in range(self.n_workers):
            self.start_worker()
        await self.wait_for_workers(self.n_workers)
        return self

    def start_worker(self):
        """Start one more worker process."""
        cmd = worker_command(
            self.center.address, "--host", self.host, "--port", "0",
            "--ncores", str(self.ncores), "--parent-pid", str(os.getpid()),
            "--log-level", "warning", "--no-handoff",
        )  # fmt: skip
        # the client's import path, so functions from its own modules load on the workers
        path = os.pathsep.join(p or os.getcwd() for p in sys.path)
        proc = spawn(cmd, secret=self.secret, env={"PYTHONPATH": path})
        self.procs.append(proc)
        return proc

    async def wait_for_workers(self, n):
        deadline = time.monotonic() + self.timeout
        while len(self.center.ncores) < n:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{len(dead)} local worker process(es) exited with code "
                    f"{dead[0].returncode} before registering with the center"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.center.ncores)} of {n} local workers registered "
                    f"within {self.timeout} s"
                )
            await asyncio.sleep(0.01)

    async def close(self, timeout=5):
        """SIGTERM every worker (they leave cleanly), wait, kill stragglers, stop the center."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        _kill(self.procs)
        if self.center is not None:
            await self.center.close()

    def kill(self):
        """Kill the worker processes at once (used when the owner vanishes)."""
        _kill(self.procs)
