"""Test helpers, written once: an in-process cluster and real processes through ``bin/``.

* :func:`gen_test` runs an ``async def`` test in a fresh event loop with a deadline.
* :func:`cluster` starts a center and N workers on port 0 in the running loop and
  tears them down in ``finally``; :func:`cluster_in_thread` does the same on the
  background loop that sync ``Pool`` objects use, for plain (non-async) tests.
* :class:`Proc` starts a real process (``bin/dcenter``, ``bin/dworker``), keeps its
  output, waits for a line with a deadline and kills it on exit;
  :func:`process_cluster` starts a whole cluster that way.
* :func:`run_markdown_examples` runs the ``>>>`` examples of a Markdown file's python
  blocks (the README, the documentation's pages) as doctests.

>>> @gen_test(timeout=10)
... async def test_two_workers():
...     async with cluster(nworkers=2) as (center, workers):
...         return len(center.ncores)
>>> test_two_workers()
2
"""
import asyncio
import contextlib
import doctest
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time

from .center import Center
from .client.sync import loop_thread
from .worker.worker import Worker

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")


# Tasks of in-process clusters run in this process: a task can wait on this event until
# the test lets it go (the ``gate`` fixture of the tests clears it first, sets it after)
GATE = threading.Event()


def gated(x):
    """``x * 10``, but task ``0`` first waits for :data:`GATE` (at most 30 s).

    >>> GATE.set(); gated(0), gated(2)
    (0, 20)
    """
    if x == 0:
        assert GATE.wait(30), "the test never opened the gate"
    return x * 10


def released(path, x=None, mark=False):
    """``x``, once the file ``path`` exists (at most 60 s): a task in another process
    that runs until the test says so (``open(path, "w").close()``).  With ``mark``, it
    first leaves a file ``path.waiting-<process>-<thread>``, for the test to count the
    tasks waiting (see :func:`waiting`).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "go"); open(path, "w").close()
    >>> released(path, 3)
    3
    """
    if mark:
        open(f"{path}.waiting-{os.getpid()}-{threading.get_ident()}", "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "the test never released the task"
        time.sleep(0.005)
    return x


def waiting(path):
    """How many tasks wait in :func:`released` for ``path``, with ``mark``: one per
    thread that ever did (a thread runs one task at a time).

    >>> import tempfile; waiting(os.path.join(tempfile.mkdtemp(), "go"))
    0
    """
    folder, name = os.path.split(path)
    return sum(f.startswith(f"{name}.waiting-") for f in os.listdir(folder))


def both_waiting(go, call, what="two tasks to wait at once"):
    """Run ``call`` in a thread until two tasks wait in :func:`released` for ``go``
    (with ``mark``) at once -- one on each of two one-core workers -- then let them
    end and return what ``call`` returned; ``TimeoutError`` saying ``what`` did not
    happen within 20 s.

    >>> import tempfile
    >>> go = os.path.join(tempfile.mkdtemp(), "go")
    >>> def call():  # two threads wait, as two workers' tasks would
    ...     threads = [threading.Thread(target=released, args=(go, i, True)) for i in (1, 2)]
    ...     for t in threads: t.start()
    ...     for t in threads: t.join()
    ...     return "both ended"
    >>> both_waiting(go, call)
    'both ended'
    """
    from .utils import wait_for_sync

    result = {}
    thread = threading.Thread(target=lambda: result.update(out=call()))
    thread.start()
    try:
        wait_for_sync(lambda: waiting(go) >= 2, 20, what)
    finally:
        open(go, "w").close()
        thread.join(20)
    return result["out"]


def held(x):
    """``x``, once :data:`GATE` is open (at most 30 s): a task that runs until the test
    says so.

    >>> GATE.set(); held(3)
    3
    """
    assert GATE.wait(30), "the test never opened the gate"
    return x


def gen_test(timeout=30):
    """Run the decorated coroutine function in a new event loop, failing after ``timeout`` s."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            async def bounded():
                task = asyncio.ensure_future(func(*args, **kwargs))
                await asyncio.wait({task}, timeout=timeout)
                if not task.done():  # a TimeoutError the test raised itself stays its own
                    task.cancel()
                    await asyncio.wait({task})
                    raise TimeoutError(f"{func.__name__} did not finish within {timeout} s")
                return task.result()

            return asyncio.run(bounded())

        return wrapper

    return decorator


@contextlib.asynccontextmanager
async def cluster(nworkers=2, ncores=1, secret=None, tls=None, center_kwargs=None,
                  **worker_kwargs):  # fmt: skip
    """A center and ``nworkers`` workers on loopback, port 0, in the running loop.

    Yields ``(center, [workers])``; everything is closed on exit, even on error.
    """
    center = Center(secret=secret, tls=tls, **(center_kwargs or {}))
    workers = []
    try:
        await center.start(port=0)
        for i in range(nworkers):
            worker = Worker(center.address, ncores=ncores, secret=secret, tls=tls,
                            name=f"w{i}", **worker_kwargs)  # fmt: skip
            workers.append(worker)
            await worker.start(port=0)
        yield center, workers
    finally:
        for worker in workers:
            await worker.close()
        await center.close()


@contextlib.contextmanager
def cluster_in_thread(nworkers=2, **kwargs):
    """:func:`cluster` run on the process-wide background loop; yields ``(center, workers)``.

    >>> with cluster_in_thread(1) as (center, workers):
    ...     len(center.ncores)
    1
    """
    lt = loop_thread()
    stack = contextlib.AsyncExitStack()

    async def enter():
        return await stack.enter_async_context(cluster(nworkers, **kwargs))

    center, workers = lt.run_sync(enter())
    try:
        yield center, workers
    finally:
        lt.run_sync(stack.aclose())


def run_in_cluster_loop(coro):
    """Run ``coro`` on the loop that :func:`cluster_in_thread` servers live on."""
    return loop_thread().run_sync(coro)


class Proc:
    """A real subprocess whose merged output is collected line by line.

    ::

        with Proc([BIN + "/dcenter", "--port", "0"]) as center:
            line = center.wait_for_line(r"Started center at (\\S+)")
    """

    def __init__(self, args, env=None):
        self.args = [sys.executable, *args] if args[0].startswith(BIN) else list(args)
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=full_env, text=True,
        )  # fmt: skip
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern, timeout=15):
        """The first match of regex ``pattern`` in the output; waits up to ``timeout`` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(
                        f"{os.path.basename(self.args[1] if len(self.args) > 1 else self.args[0])}"
                        f" printed no line matching {pattern!r} within {timeout} s "
                        f"(exit code {self.proc.poll()}); output:\n{self.output}"
                    )
                self._cond.wait(min(left, 0.1))

    def wait(self, timeout=15):
        """Wait for exit; returns the exit code or raises ``TimeoutError``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.args} still running after {timeout} s") from None

    def signal(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(5)


@contextlib.contextmanager
def process_cluster(nworkers=2, ncores=1, secret=None, timeout=20, center_args=(),
                    worker_args=()):  # fmt: skip
    """A center and workers as real processes through ``bin/``; yields ``(address, center, workers)``.

    The workers run without a supervisor (``--no-nanny``): a signal sent to one reaches
    the worker itself, as fault tests need.

    ``address`` is the center's ``"host:port"``; ``center`` and ``workers`` are :class:`Proc`.
    """
    env = {"DISTRIBUTED3_SECRET": secret} if secret else {}
    with contextlib.ExitStack() as stack:
        center = stack.enter_context(
            Proc([os.path.join(BIN, "dcenter"), "--port", "0", *center_args], env)
        )
        address = center.wait_for_line(r"Started center at (\S+)", timeout).group(1)
        workers = [
            stack.enter_context(
                Proc([os.path.join(BIN, "dworker"), address, "--ncores", str(ncores),
                      "--no-nanny", *worker_args], env)
            )
            for _ in range(nworkers)
        ]
        for w in workers:
            w.wait_for_line(r"Register with center", timeout)
        yield address, center, workers


def markdown_python_blocks(path):
    """The bodies of the ```` ```python ```` blocks of the Markdown file ``path``."""
    with open(path) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def run_markdown_examples(source, name, path, replace=None):
    """Run the ``>>>`` examples of ``source`` (a block of the file ``path``) as one
    doctest, after the textual ``replace``-ments; ``AssertionError`` if any fails.

    >>> run_markdown_examples(">>> 1 + 1\\n2\\n", "sum", "inline.md")
    """
    for old, new in (replace or {}).items():
        source = source.replace(old, new)
    test = doctest.DocTestParser().get_doctest(source, {}, name, path, 0)
    assert test.examples, f"{name} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda s: sys.stderr.write(s))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) in {name} failed"
