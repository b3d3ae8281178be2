"""Starting and supervising worker processes; finding GPUs.

Used by ``dcenter --workers N``, ``dworker --nprocs N|gpu`` and ``Pool()``'s
local cluster.  The secret travels in the environment, never on a command line.

>>> parse_resources("GPU=2,MEM=64e9")
{'GPU': 2.0, 'MEM': 64000000000.0}
>>> [g.index for g in visible_gpus({"DISTRIBUTED3_FAKE_GPUS": "0:16e9,1:2e9"}, 4e9)]
['0']
"""
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..utils import format_address


def parse_resources(text):
    """``"GPU=2,MEM=64e9"`` -> ``{"GPU": 2.0, "MEM": 64e9}``."""
    out = {}
    for part in filter(None, (text or "").split(",")):
        name, sep, amount = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"resource {part!r} is not NAME=AMOUNT")
        out[name.strip()] = float(amount)
    return out


def format_resources(resources):
    """The inverse of :func:`parse_resources`.

    >>> format_resources({"GPU": 1.0})
    'GPU=1.0'
    """
    return ",".join(f"{k}={v}" for k, v in resources.items())


@dataclass
class GPU:
    index: str
    free_bytes: float


def visible_gpus(environ=None, min_free_bytes=0):
    """The GPUs this process may use with at least ``min_free_bytes`` free.

    Read from ``nvidia-smi``, limited to ``CUDA_VISIBLE_DEVICES`` when set;
    ``DISTRIBUTED3_FAKE_GPUS="0:16e9,1:2e9"`` stands in for it in tests.
    """
    environ = os.environ if environ is None else environ
    fake = environ.get("DISTRIBUTED3_FAKE_GPUS")
    if fake is not None:
        gpus = [GPU(i, float(free)) for i, _, free in
                (p.partition(":") for p in fake.split(",") if p)]  # fmt: skip
    elif shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"nvidia-smi failed: {out.stderr.strip()}")
        gpus = [GPU(i.strip(), float(mib) * 2**20) for i, mib in
                (line.split(",") for line in out.stdout.strip().splitlines() if line)]  # fmt: skip
    else:
        gpus = []
    allowed = environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        keep = {d.strip() for d in allowed.split(",")}
        gpus = [g for g in gpus if g.index in keep]
    return [g for g in gpus if g.free_bytes >= min_free_bytes]


def worker_command(center, *args):
    """The command line of a worker process for ``center``."""
    cli = "distributed3.deploy.cli"
    return [sys.executable, "-m", cli, "worker", format_address(center), *args]


def spawn(cmd, secret=None, env=None, **kwargs):
    """Start a process with the secret (if any) in its environment."""
    full = dict(os.environ, **(env or {}))
    if secret:
        full["DISTRIBUTED3_SECRET"] = secret.decode() if isinstance(secret, bytes) else secret
    return subprocess.Popen(cmd, env=full, stdin=subprocess.DEVNULL, **kwargs)


async def stop(procs, timeout=10, sig=signal.SIGTERM):
    """Signal every process (``Popen``), wait up to ``timeout`` s without blocking the
    loop, then kill what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    kill(procs)


def terminate(procs, timeout=3):
    """:func:`stop`, blocking, for code outside any event loop (a finalizer at exit).

    >>> import subprocess, sys
    >>> proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    >>> terminate([proc]); proc.returncode
    -15
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            pass
    kill(procs)


def kill(procs):
    """Kill every process (``Popen``) still running, and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def fork_workers(n, body):
    """Fork ``n`` children that each run ``body()`` and exit; returns their pids.

    Call it before any thread or event loop exists in this process: a child starts
    with everything already imported, so it is up in milliseconds, not the tenth of
    a second a new interpreter takes.  A child ends as an interpreter would: what
    tasks registered with ``atexit`` runs (not what the parent had registered), and
    ``sys.stdout``/``sys.stderr`` are flushed, so nothing a task printed is lost.
    """
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which ends with os._exit
            os._exit(_child(body))
        pids.append(pid)
    return pids


def _child(body):
    """Run ``body()`` in a forked child; its exit status, everything flushed."""
    _atexit_call("_clear")  # the parent's exit handlers are the parent's
    code = 0
    try:
        body()
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _atexit_call("_run_exitfuncs")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return code


def _atexit_call(name):
    import atexit

    func = getattr(atexit, name, None)  # CPython's; absent elsewhere
    if func is not None:
        func()


def reap(pids):
    """``{pid: exit code}`` of those of ``pids`` that ended, which are removed from it.

    >>> import subprocess
    >>> child = subprocess.Popen(["false"])
    >>> pids = [child.pid]
    >>> ended = {}
    >>> while pids: ended.update(reap(pids)); time.sleep(0.01)
    >>> list(ended.values())
    [1]
    """
    ended = {}
    for pid in list(pids):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # collected elsewhere
            done, status = pid, None
        if done:
            pids.remove(pid)
            ended[pid] = None if status is None else os.waitstatus_to_exitcode(status)
    return ended


def stop_pids(pids, timeout=10, sig=signal.SIGTERM):
    """:func:`stop`, blocking, for children known by pid (forked ones): signal, wait, then kill."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        reap(pids)
        time.sleep(0.01)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while pids and time.monotonic() < deadline + 5:
        reap(pids)
        time.sleep(0.01)


def supervise(procs):
    """Wait for child workers; pass SIGINT/SIGTERM on to them. Returns the worst exit code."""

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    return max((abs(c) for c in codes), default=0)
