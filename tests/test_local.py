"""Local clusters: ``Pool()`` and ``Pool(n_workers=...)`` start a center process that
forks the workers, and whatever ends first, what it started ends with it."""
import asyncio
import gc
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from distributed3 import CommClosedError, DistributedError, Pool, WorkerLostError
from distributed3.testing import Proc
from distributed3.utils import wait_for_sync

pytestmark = pytest.mark.slow


def test_embedded_default_pool_starts_and_stops_processes():
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with Pool() as pool:
        ncpu = psutil.cpu_count() or 1
        assert pool.nworkers == ncpu
        assert all(n == 1 for n in pool.available_cores.values())
        assert all(h == "127.0.0.1" for h, _ in pool.available_cores)
        started = {p.pid for p in me.children(recursive=True)} - before
        assert len(started) == ncpu + 1  # the workers and the center
        assert pool.cluster.center_proc.pid in started
        assert pool.gather(pool.map(lambda x: x + 1, range(10))) == list(range(1, 11))
        assert pool.cluster.secret  # a random secret, never open
    pool.close()  # idempotent
    assert pool.status == "closed"
    alive = {p.pid for p in me.children(recursive=True)} & started
    assert not alive


def test_embedded_pool_with_n_workers_and_close_twice():
    pool = Pool(n_workers=1)
    try:
        assert pool.nworkers == 1
        assert pool.apply(pow, (2, 10)).get() == 1024
    finally:
        pool.close()
        pool.close()
    with pytest.raises(CommClosedError, match="is not running"):
        pool.map(len, ["a"])


def test_a_dropped_pool_keeps_its_cluster_while_its_stream_runs():
    # list(Pool().imap(...)): the Pool object is garbage at once, but the stream it made
    # (like its handles) holds its session, which still needs the cluster
    pool = Pool(n_workers=1)
    session = pool.session
    stream = pool.imap(abs, [-1, -2, -3])
    del pool
    gc.collect()
    try:
        assert list(stream) == [1, 2, 3]
    finally:
        session.sync(session.close())


def test_halt_stops_an_embedded_cluster(all_end):
    pool = Pool(n_workers=2)
    kids = psutil.Process().children(recursive=True)
    assert pool.nworkers == 2 and len(kids) == 3  # the center and the workers it forked
    pool.halt()
    assert pool.status == "closed"
    assert all_end(kids)


def test_embedded_cluster_ends_when_its_client_is_killed(all_end):
    script = ("import threading; from distributed3 import Pool; p = Pool(n_workers=2); "
              "print('pids', p.cluster.center_proc.pid, "
              "*[i['pid'] for i in p.worker_info().values()], flush=True); "
              "threading.Event().wait()")  # until the test kills it  # fmt: skip
    with Proc([sys.executable, "-c", script]) as client:
        pids = [int(p) for p in client.wait_for_line(r"pids ([\d ]+)").group(1).split()]
        kids = [psutil.Process(p) for p in pids]
        assert len(kids) == 3  # the center and two workers
        client.proc.kill()
        assert all_end(kids)


def quiet_script(script):
    """Run ``script`` in a new interpreter; its output, once it succeeded and wrote
    nothing on stderr -- read to EOF, so the lines of the workers it started count."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out


def test_closing_an_embedded_cluster_is_quiet():
    script = ("from distributed3 import Pool\n"
              "for _ in range(3):\n"
              "    with Pool(n_workers=2) as p:\n"
              "        assert [p.apply(abs, (-i,)).get() for i in range(300)] == \\\n"
              "            list(range(300))\n")  # fmt: skip
    quiet_script(script)  # the workers stop before their center: nobody "lost" anything


def test_a_script_that_never_closes_its_pool_ends_quietly(all_end):
    """No ``close()``: at exit the pool closes as it would have, so the workers do not
    warn, after the script ended, that their center vanished."""
    script = ("from distributed3 import Pool\n"
              "pool = Pool(n_workers=2)\n"
              "print('pids', pool.cluster.center_proc.pid,\n"
              "      *[i['pid'] for i in pool.worker_info().values()])\n"
              "assert pool.gather(pool.map(abs, [-1, -2])) == [1, 2]\n")  # fmt: skip
    out = quiet_script(script)
    pids = [int(p) for p in out.stdout.split()[1:]]
    assert len(pids) == 3 and all_end([psutil.Process(p) for p in pids if psutil.pid_exists(p)])


def test_a_cluster_that_cannot_start_says_why_at_once():
    from distributed3 import LocalCluster

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="local center process exited with code 1"):
        asyncio.run(LocalCluster(n_workers=2, ncores=-1, timeout=60).start())
    assert time.monotonic() - start < 20  # not the 60 s time-out


def test_a_crashing_task_takes_only_its_forked_worker_down():
    with Pool(n_workers=2) as pool:
        center = psutil.Process(pool.cluster.center_proc.pid)

        def crash(_):
            os._exit(3)  # takes the worker process down with it

        lost = pool.apply(crash, (0,), retries=0)
        with pytest.raises(WorkerLostError):
            lost.get()
        pool.wait_for_workers(1, timeout=10)
        assert center.is_running() and center.status() != psutil.STATUS_ZOMBIE
        assert pool.gather(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
        # the center collected its dead child (no zombie left under it) and started
        # another in its place
        wait_for_sync(lambda: len(center.children()) == 2 and all(
            c.status() != psutil.STATUS_ZOMBIE for c in center.children()), 10,
            "the dead worker is reaped and replaced")  # fmt: skip
        [death] = pool.worker_deaths()
        assert death["cause"] == "exited with code 3"


def test_a_killed_local_worker_is_replaced_and_its_death_reported():
    with Pool(n_workers=2) as pool:
        first = sorted(i["pid"] for i in pool.worker_info().values())
        os.kill(first[0], signal.SIGKILL)

        def replaced():
            pids = {i["pid"] for i in pool.worker_info().values()}
            return len(pids) == 2 and first[0] not in pids

        wait_for_sync(replaced, 20, "no worker took the killed one's place")
        [death] = pool.worker_deaths()
        assert death["pid"] == first[0] and death["cause"] == "was killed by SIGKILL"
        assert death["address"] is not None
        assert len(set(pool.gather(pool.map(lambda _: os.getpid(), range(20),
                                            chunksize=1)))) == 2  # fmt: skip


def test_a_pool_whose_local_center_died_says_so(caplog):
    with Pool(n_workers=2) as pool:
        assert pool.apply(abs, (-1,)).get() == 1
        os.kill(pool.cluster.center_proc.pid, signal.SIGKILL)
        wait_for_sync(lambda: "center process exited with code -9" in caplog.text, 10,
                      "the pool did not notice its center died")  # fmt: skip
        with pytest.raises(DistributedError, match="center process exited with code -9"):
            pool.apply(abs, (-2,))
