"""What every deployed cluster shares: a center, workers started through an engine,
and ``scale`` / ``adapt`` / ``close`` / ``logs``.

An engine (:mod:`.jobqueue` for Slurm, PBS, SGE and LSF; :mod:`.ssh`) says how to
start a worker under a name, how to stop one, which of its workers the engine still
runs, and where each one's log is.  This class does the rest: it starts the center,
counts workers asked for against those running, retires the ones ``scale`` lets go
through the worker itself (it finishes its tasks and hands its keys to peers, so nothing
is lost), and stops everything on ``close()`` or when this process ends.  Workers are
told ``--death-timeout``, so they also end when their center is gone.

Use one with a pool::

    cluster = SLURMCluster(cores=4, memory="16GB", walltime="01:00:00")
    cluster.scale(10)            # or cluster.adapt(minimum=0, maximum=50)
    pool = Pool(cluster)
    ...
    cluster.close()

Every method blocks (the engines are programs that this process runs); none needs an
event loop, so a cluster can be driven from a script, IPython or a notebook alike.
"""
import asyncio
import itertools
import logging
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import weakref

from ..core.security import normalize_secret
from ..core.server import rpc
from ..exceptions import DistributedError
from ..utils import format_address, local_ip_for
from .procs import spawn, terminate

logger = logging.getLogger(__name__)

# what the center's address defaults to: this machine's address on the route out (no
# packet is sent), which other machines can reach; tests and laptops give loopback
ROUTE_PROBE = "192.0.2.1"  # TEST-NET-1: never routed, only used to pick an interface


def run_blocking(coro):
    """Run ``coro`` to its end on a fresh loop in a helper thread, so that it works
    whether or not the caller's thread runs a loop (a notebook's does)."""
    import concurrent.futures  # here: Pool() imports this module, and seldom scales

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Control:
    """What any cluster's owner does through its center (a base of :class:`Cluster` and
    of the local cluster): ask it, ask a worker to retire, adapt the size to the work.
    Needs ``center_address``, ``secret``, ``timeout``, ``id``, ``worker_cores``,
    ``size()`` and ``scale(n)``."""

    _adaptive = None
    _center = None  # the center's process, where this one started it

    def call_center(self, op, **kwargs):
        """The center's answer to ``op``, e.g. ``cluster.call_center("ncores")``."""

        async def call():
            async with rpc(self.center_address, secret=self.secret, timeout=self.timeout) as c:
                return await getattr(c, op)(**kwargs)

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return run_blocking(call())
            except OSError:
                if time.monotonic() > deadline or (self._center and self._center.poll()):
                    raise
                time.sleep(0.05)

    def _ask_to_retire(self, addresses):
        """Ask these workers to retire, each handing its keys to the others that stay."""

        async def ask(address):
            try:
                async with rpc(address, secret=self.secret, timeout=self.timeout) as worker:
                    await worker.retire(why=f"{type(self).__name__} scaled down",
                                        avoid=list(addresses))  # fmt: skip
            except OSError as e:  # gone already: the next look forgets it
                logger.info("Could not ask %s to retire: %s", format_address(address), e)

        async def ask_all():
            await asyncio.gather(*[ask(a) for a in addresses])

        run_blocking(ask_all())

    def adapt(self, minimum=0, maximum=None, interval=1.0, grace=10.0):
        """Grow while tasks wait and shrink to ``minimum`` after ``grace`` s without
        work; see :class:`~.adaptive.Adaptive`.  ``cluster.adapt(maximum=0)`` ... or
        ``cluster.scale(n)`` stops adapting.

        >>> cluster.adapt(minimum=0, maximum=20)             # doctest: +SKIP
        """
        from .adaptive import Adaptive

        self.stop_adapting()
        self._adaptive = Adaptive(self, minimum, maximum, interval, grace)
        return self._adaptive

    def stop_adapting(self):
        """Stop adapting; the workers stay as they are."""
        adaptive, self._adaptive = self._adaptive, None  # once, whoever else stops it
        if adaptive is not None:
            adaptive.stop()

    def _scale_asked(self):
        """``scale`` called by the user, not by adapting: adapting stops (documented)."""
        adaptive = self._adaptive
        if adaptive is not None and threading.current_thread() is not adaptive.thread:
            self.stop_adapting()


class Cluster(Control):
    """A center and workers started through an engine; subclasses say how.

    ``worker_cores``: tasks each worker runs at once.  ``host``: the address the center
    listens on and workers connect to (default: this machine's outward address).
    ``secret``: shared by the whole cluster (default: a new random one); it never
    appears on a command line.  ``death_timeout``: seconds a worker outlives its
    center.  ``timeout``: seconds to wait for the center, and for a retired worker to
    leave before it is stopped by force.  ``dashboard_port``, ``dashboard_host``: the
    center's dashboard (default 8790, or a free port, on the loopback of the center's
    host; see ``pool.dashboard_link``).
    """

    engine = "engine"  # the name of workers' logs and jobs
    # seconds a pool's work waits for a worker to join (Pool(cluster) takes it): jobs
    # may queue for long, and an adaptive cluster starts workers only once work waits
    worker_wait = math.inf

    def __init__(self, *, worker_cores=1, host=None, port=0, secret=None, death_timeout=60,
                 timeout=60, log_directory=None, dashboard_port=None,
                 dashboard_host=None):  # fmt: skip
        self.worker_cores = int(worker_cores)
        self.secret = normalize_secret(secret) or secrets.token_hex(32).encode()
        self.host = host or local_ip_for(ROUTE_PROBE)
        self.port = port
        self.death_timeout = death_timeout
        self.timeout = timeout
        self.dashboard_port = dashboard_port
        self.dashboard_host = dashboard_host
        self.id = secrets.token_hex(3)
        self.log_directory = os.path.abspath(log_directory or os.path.join(
            os.path.expanduser("~"), ".distributed3", "logs", f"{self.engine}-{self.id}"))
        self.center_address = None
        # name -> the engine's handle (a job id, a process), as launched: some may have
        # ended since the last look (``workers`` looks)
        self.launched = {}
        self.started = []  # the name of every worker started, for logs()
        self._seen = set()  # workers that registered once
        self.failed_starts = 0  # workers in a row that ended before registering
        self._retry_at = 0.0  # no worker starts before then, after failed starts
        self.retiring = {}  # name -> when it was asked to retire
        self._names = itertools.count()
        self._lock = threading.RLock()
        self._adaptive = None
        self._center = None  # this process's center child, for the engines that start one
        self._finalizer = None
        self.status = "created"

    def __repr__(self):
        where = format_address(self.center_address) if self.center_address else "not started"
        return (f"<{type(self).__name__} center={where} launched={len(self.launched)} "
                f"{self.status}>")  # fmt: skip

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def workers(self):
        """``{name: handle}`` of the workers the engine runs or has queued now (it asks)."""
        with self._lock:
            if self.status == "running":
                self._forget_ended()
            return dict(self.launched)

    # -- what an engine provides --------------------------------------------------

    def _launch(self, names):
        """Start a worker under each of ``names``; ``{name: handle}``."""
        raise NotImplementedError

    def _stop(self, names):
        """Stop these workers at once (cancel their jobs, end their processes)."""
        raise NotImplementedError

    def _alive(self):
        """The names of the workers the engine still runs or has queued."""
        raise NotImplementedError

    def _log_path(self, name):
        """The file a worker's output goes to."""
        return os.path.join(self.log_directory, f"{name}.log")

    def worker_args(self, name):
        """The ``dworker`` options (after the center's address) of worker ``name``."""
        args = ["--name", name, "--ncores", str(self.worker_cores), "--nprocs", "1"]
        if self.death_timeout is not None:
            args += ["--death-timeout", str(self.death_timeout)]
        return args

    # -- the center -----------------------------------------------------------------

    def _start_center(self):
        """Start ``dcenter`` as a child of this process, on ``host:port``; it ends with
        this process."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        os.makedirs(self.log_directory, exist_ok=True)
        with socket.create_server((self.host, self.port), family=family, backlog=1024) as ls:
            self.center_address = (self.host, ls.getsockname()[1])
            cmd = [sys.executable, "-m", "distributed3.deploy.cli", "center", "--host",
                   self.host, "--listen-fd", str(ls.fileno()), "--parent-pid", str(os.getpid())]
            cmd += self.dashboard_args()
            log = open(os.path.join(self.log_directory, "center.log"), "ab")
            with log:
                self._center = spawn(cmd, secret=self.secret, pass_fds=(ls.fileno(),),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        self._finalizer = weakref.finalize(self, terminate, [self._center])
        self.call_center("ncores")  # up, and the secret works

    def dashboard_args(self):
        """The center's dashboard options, as asked (``dashboard_port``, ``dashboard_host``)."""
        args = []
        if self.dashboard_port is not None:
            args += ["--dashboard-port", str(self.dashboard_port)]
        if self.dashboard_host is not None:
            args += ["--dashboard-host", self.dashboard_host]
        return args

    def registered(self):
        """``{name: worker address}`` of this cluster's workers registered now."""
        workers = self.call_center("workers")
        found = {info["name"]: address for address, info in workers.items()
                 if info.get("name") in self.launched}  # fmt: skip
        if found.keys() - self._seen:  # the environment works: no waiting any more
            self._seen |= found.keys()
            self.failed_starts, self._retry_at = 0, 0.0
        return found

    def wait_for_workers(self, n, timeout=None):
        """Block until ``n`` of this cluster's workers registered; raise ``TimeoutError``
        (naming their logs) after ``timeout`` s (default: the cluster's)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while len(self.registered()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.registered())} of {n} workers registered within "
                    f"{timeout} s; their logs are in {self.log_directory}"
                )
            time.sleep(0.1)

    # -- scaling ----------------------------------------------------------------------

    def scale(self, n):
        """Have ``n`` workers: start more, or retire the ones holding least.

        >>> cluster.scale(4)                                  # doctest: +SKIP
        """
        self._scale_asked()
        with self._lock:
            self._check_running()
            self._forget_ended()
            staying = [w for w in self.launched if w not in self.retiring]
            if n > len(staying) and time.monotonic() < self._retry_at:
                logger.info("%s: not starting workers before %.0f s from now: the last %d "
                            "ended before they registered", self,
                            self._retry_at - time.monotonic(), self.failed_starts)  # fmt: skip
            elif n > len(staying):
                names = [f"{self.engine}-{self.id}-{next(self._names)}"
                         for _ in range(n - len(staying))]  # fmt: skip
                os.makedirs(self.log_directory, exist_ok=True)
                self.launched.update(self._launch(names))
                self.started += names
                logger.info("%s: starting %d workers (%d asked for)", self, len(names), n)
            elif n < len(staying):
                self.retire(self._least_needed(staying, len(staying) - n))

    def size(self):
        """Workers running or starting, not counting those retiring (the engine is asked:
        workers that ended, a job's walltime over, say, do not count)."""
        with self._lock:
            if self.status == "running":
                self._forget_ended()
            return len([w for w in self.launched if w not in self.retiring])

    def retire(self, names):
        """Retire these workers: a registered one finishes its tasks and hands its keys
        to peers before it leaves; one not started yet is cancelled."""
        with self._lock:
            registered = self.registered()
            now = time.monotonic()
            unstarted = [w for w in names if w not in registered]
            if unstarted:
                self._stop(unstarted)
                for w in unstarted:
                    self.launched.pop(w, None)
            leaving = [w for w in names if w in registered]
            for w in leaving:
                self.retiring[w] = now
            self._ask_to_retire([registered[w] for w in leaving])

    def _least_needed(self, names, n):
        """The ``n`` of ``names`` to let go: not started yet first, then those holding
        the fewest bytes, the newest first among equals."""
        held = {info["name"]: info["nbytes"] for info in self.call_center("workers").values()}
        order = sorted(enumerate(names), key=lambda iw: (iw[1] in held, held.get(iw[1], 0),
                                                         -iw[0]))  # fmt: skip
        return [w for _, w in order[:n]]

    def _forget_ended(self):
        """Drop the workers the engine no longer runs; stop retired ones that overstay;
        after workers that ended before they registered, start no more for a while
        (2, 4, 8 ... up to 300 s), so that a broken environment is not submitted in a
        loop."""
        alive = self._alive()
        ended = [w for w in self.launched if w not in alive]
        if ended or self.launched.keys() - self._seen:
            try:
                self.registered()  # which of them joined
            except (OSError, DistributedError):  # the center is gone: none since
                pass
        for w in ended:
            self.launched.pop(w)
            if self.retiring.pop(w, None) is None and w not in self._seen:
                self._failed_start(w)
        late = [w for w, t in self.retiring.items() if time.monotonic() - t > self.timeout]
        if late:
            logger.warning("%s: workers %s did not leave within %g s; stopping them", self,
                           late, self.timeout)  # fmt: skip
            self._stop(late)

    def _failed_start(self, name):
        self.failed_starts += 1
        self._retry_at = time.monotonic() + min(2.0**self.failed_starts, 300.0)
        with open(self._log_path(name), "a+", errors="replace") as f:
            f.seek(0)
            said = f.read()[-1000:]
        logger.warning("%s: worker %s ended before it registered (%d in a row); its log "
                       "%s ends with:\n%s", self, name, self.failed_starts,
                       self._log_path(name), said)  # fmt: skip

    # -- the end ------------------------------------------------------------------------

    def logs(self):
        """``{name: text}``: the output of the center and of every worker started."""
        out = {}
        for name in ["center", *self.started]:
            path = os.path.join(self.log_directory, "center.log") if name == "center" \
                else self._log_path(name)  # fmt: skip
            try:
                with open(path, errors="replace") as f:
                    out[name] = f.read()
            except OSError:
                out[name] = ""
        return out

    def close(self):
        """Stop adapting, stop every worker and the center.  Idempotent."""
        if self.status == "closed":
            return
        self.stop_adapting()
        try:
            with self._lock:
                self.status = "closing"  # scale() from here on raises
                if self.launched:
                    self._stop(list(self.launched))
        finally:  # the engine failing to stop a worker must not leave the center running
            with self._lock:
                self.launched.clear()
                self.retiring.clear()
                self.status = "closed"
            if self._finalizer is not None:
                self._finalizer()  # the center: SIGTERM, then kill

    def _check_running(self):
        if self.status in ("closing", "closed"):
            raise RuntimeError(f"{self!r} is closed")
