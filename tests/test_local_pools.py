"""Local pools in one command, worker recycling, resources and GPU workers (simulated)."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from distributed3 import DistributedError, Pool, WorkerLostError
from distributed3.testing import BIN, Proc
from distributed3.utils import wait_for_sync

pytestmark = pytest.mark.slow
DCENTER, DWORKER = os.path.join(BIN, "dcenter"), os.path.join(BIN, "dworker")


def children_of(proc):
    return psutil.Process(proc.proc.pid).children(recursive=True)


def all_end(procs, timeout=10):
    """True once every one of ``procs`` (psutil) has ended, waiting up to ``timeout`` s;
    zombies count as ended (their parent, not they, may be gone)."""
    psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def run_python(script, env=None):
    """``python -c script`` to its end: the ``CompletedProcess``, output as text."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def test_dcenter_workers_starts_and_stops_local_workers():
    with Proc([DCENTER, "--port", "0", "--workers", "2"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Pool(address) as pool:
            pool.wait_for_workers(2, timeout=20)
            assert pool.nworkers == 2 and pool.nhosts == 1
            assert pool.gather(pool.map(abs, [-1, -2])) == [1, 2]
            with pytest.raises(RuntimeError, match="did not start"):
                pool.halt()
        kids = children_of(center)
        assert len(kids) == 2
        center.signal(signal.SIGTERM)
        assert center.wait() == 0
        assert all_end(kids)


def test_halt_stops_an_embedded_cluster():
    pool = Pool(n_workers=2)
    kids = psutil.Process().children(recursive=True)
    assert pool.nworkers == 2 and len(kids) == 3  # the center and the workers it forked
    pool.halt()
    assert pool.status == "closed"
    assert all_end(kids)


def test_embedded_cluster_ends_when_its_client_is_killed():
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


def test_closing_an_embedded_cluster_is_quiet():
    script = ("from distributed3 import Pool\n"
              "for _ in range(3):\n"
              "    with Pool(n_workers=2) as p:\n"
              "        assert [p.apply(abs, (-i,)).get() for i in range(300)] == \\\n"
              "            list(range(300))\n")  # fmt: skip
    out = run_python(script)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # the workers stop before their center: nobody "lost" anything


def test_forked_workers_flush_what_tasks_print_and_run_their_exit_handlers(tmp_path):
    script = textwrap.dedent(f"""
        import atexit
        from distributed3 import Pool

        def shout(i):
            print("TASK-OUTPUT", i)  # block-buffered: stdout is a pipe here
            atexit.register(lambda: open({str(tmp_path)!r} + f"/exit-{{i}}", "w").close())
            return i

        with Pool(n_workers=1) as p:
            assert p.gather(p.map(shout, range(3))) == [0, 1, 2]
    """)
    out = run_python(script, env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    assert out.returncode == 0, out.stderr
    assert sorted(line for line in out.stdout.splitlines() if "TASK-OUTPUT" in line) == [
        "TASK-OUTPUT 0", "TASK-OUTPUT 1", "TASK-OUTPUT 2"]  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["exit-0", "exit-1", "exit-2"]


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
        # the center collected its dead child: no zombie left under it
        wait_for_sync(lambda: len(center.children()) == 1, 10, "the dead worker is reaped")
        assert [c.status() for c in center.children()] != [psutil.STATUS_ZOMBIE]


def test_a_pool_whose_local_center_died_says_so():
    with Pool(n_workers=2) as pool:
        assert pool.apply(abs, (-1,)).get() == 1
        os.kill(pool.cluster.center_proc.pid, signal.SIGKILL)
        wait_for_sync(lambda: pool.session.broken is not None, 10, "the pool notices its center died")
        with pytest.raises(DistributedError, match="center process exited with code -9"):
            pool.apply(abs, (-2,))


def test_nprocs_starts_and_stops_several_workers():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--nprocs", "3", "--ncores", "1"]) as sup:
            with Pool(address) as pool:
                pool.wait_for_workers(3, timeout=20)
                pids = set(pool.gather(pool.map(lambda _: os.getpid(), range(30))))
                assert len(pids) == 3
            sup.signal(signal.SIGTERM)
            assert sup.wait() == 0
            center.wait_for_line("it left")


def test_nprocs_gpu_one_worker_per_gpu_with_enough_memory():
    fake = {"DISTRIBUTED3_FAKE_GPUS": "0:16e9,1:1e9,2:8e9"}
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        args = [DWORKER, address, "--nprocs", "gpu", "--min-gpu-memory", "4e9"]
        with Proc(args, env=fake):
            with Pool(address) as pool:
                pool.wait_for_workers(2, timeout=20)
                assert sorted(pool.worker_resources.values(), key=str) == [{"GPU": 1.0}] * 2
                seen = pool.gather(pool.map(lambda _: os.environ["CUDA_VISIBLE_DEVICES"],
                                            range(20), resources={"GPU": 1}))  # fmt: skip
                assert set(seen) == {"0", "2"}
                assert pool.nworkers == 2  # GPU 1 had too little memory


def test_resources_limit_where_and_how_many_at_once():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--ncores", "4", "--resources", "GPU=2", "--name", "gpu"]), \
             Proc([DWORKER, address, "--ncores", "4", "--name", "cpu"]):  # fmt: skip
            with Pool(address) as pool:
                pool.wait_for_workers(2, timeout=20)

                def span(_):
                    start = time.time()
                    time.sleep(0.05)
                    return os.getpid(), start, time.time()

                spans = pool.gather(pool.map(span, range(10), resources={"GPU": 1}))
                assert len({pid for pid, _, _ in spans}) == 1  # all on the GPU worker
                most = max(sum(s <= t < e for _, s, e in spans) for _, t, _ in spans)
                assert most <= 2  # never more than GPU=2 at once
                with pytest.raises(Exception, match="none has resources"):
                    Pool(address, timeout=1).map(abs, [1], resources={"TPU": 1})


def test_max_tasks_and_lifetime_retire_gracefully():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--ncores", "1"]), \
             Proc([DWORKER, address, "--ncores", "1", "--max-tasks", "5"]) as short:  # fmt: skip
            with Pool(address) as pool:
                pool.wait_for_workers(2, timeout=20)
                out = pool.map(lambda x: x * 2, range(40))
                assert short.wait() == 0
                short.wait_for_line(r"Retiring: it has run \d+ tasks")
                assert pool.gather(out) == [x * 2 for x in range(40)]  # handed off, not lost
                with Proc([DWORKER, address, "--lifetime", "0.5"]) as brief:
                    brief.wait_for_line("Register with center")
                    data = pool.scatter(list(range(10)))
                    assert brief.wait() == 0
                    brief.wait_for_line(r"Retiring: its lifetime of 0.5 s is over")
                    assert pool.gather(data) == list(range(10))
