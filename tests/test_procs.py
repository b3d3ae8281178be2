"""Worker processes: forked by ``dcenter --workers``, started by ``dworker --nprocs N|gpu``
and stopped; the GPUs and resources they are given; the secret in their environment."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from distributed3 import Pool
from distributed3.deploy.procs import (
    format_resources,
    parse_resources,
    spawn,
    stop,
    visible_gpus,
    worker_command,
)
from distributed3.testing import BIN, Proc
from distributed3.worker.store import machine_memory

DCENTER, DWORKER = os.path.join(BIN, "dcenter"), os.path.join(BIN, "dworker")


def children_of(proc):
    return psutil.Process(proc.proc.pid).children(recursive=True)


@pytest.mark.slow
def test_dcenter_workers_starts_and_stops_local_workers(all_end):
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


@pytest.mark.slow
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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(line for line in out.stdout.splitlines() if "TASK-OUTPUT" in line) == [
        "TASK-OUTPUT 0", "TASK-OUTPUT 1", "TASK-OUTPUT 2"]  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["exit-0", "exit-1", "exit-2"]


@pytest.mark.slow
def test_nprocs_starts_and_stops_several_workers():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--nprocs", "3", "--ncores", "1",
                   "--memory-limit", "auto"]) as sup:  # fmt: skip
            with Pool(address) as pool:
                pool.wait_for_workers(3, timeout=20)
                pids = set(pool.gather(pool.map(lambda _: os.getpid(), range(30))))
                assert len(pids) == 3
                # 'auto': the machine's memory shared by the three, not all of it each
                limits = [i["memory_limit"] for i in pool.worker_info().values()]
                assert limits == [machine_memory() // 3] * 3
            sup.signal(signal.SIGTERM)
            assert sup.wait() == 0
            center.wait_for_line("it left")


@pytest.mark.slow
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


def test_resources_parse_and_format_back():
    assert parse_resources("GPU=2, MEM=64e9") == {"GPU": 2.0, "MEM": 64e9}
    assert parse_resources("") == parse_resources(None) == {}
    assert parse_resources(format_resources({"GPU": 1.0, "TPU": 0.5})) == {"GPU": 1.0, "TPU": 0.5}
    for bad in ("GPU", "=2", "GPU=two"):
        with pytest.raises(ValueError):
            parse_resources(bad)


def test_visible_gpus_keep_the_allowed_ones_with_enough_memory():
    env = {"DISTRIBUTED3_FAKE_GPUS": "0:16e9,1:2e9,2:8e9,3:32e9"}
    assert [g.index for g in visible_gpus(env)] == ["0", "1", "2", "3"]
    assert [g.index for g in visible_gpus(env, min_free_bytes=4e9)] == ["0", "2", "3"]
    limited = dict(env, CUDA_VISIBLE_DEVICES="1, 3")
    assert [g.index for g in visible_gpus(limited, min_free_bytes=4e9)] == ["3"]


def test_the_secret_goes_in_the_environment_not_on_the_command_line():
    cmd = worker_command(("127.0.0.1", 8787), "--ncores", "2")
    assert cmd[1:] == ["-m", "distributed3.deploy.cli", "worker", "127.0.0.1:8787",
                       "--ncores", "2"]  # fmt: skip
    proc = spawn([sys.executable, "-c", "import os; print(os.environ['DISTRIBUTED3_SECRET'])"],
                 secret=b"s3cret", stdout=subprocess.PIPE, text=True)  # fmt: skip
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "s3cret" and not any("s3cret" in a for a in proc.args)


def test_stop_kills_what_ignores_sigterm():
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, threading"
         "; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
         "; print('ready', flush=True); threading.Event().wait(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    polite = subprocess.Popen(
        [sys.executable, "-c", "import threading; threading.Event().wait(60)"])
    try:
        assert stubborn.stdout.readline() == "ready\n"  # its handler is in place
        asyncio.run(stop([stubborn, polite], timeout=0.5))
        assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    finally:
        for proc in (stubborn, polite):
            proc.kill()
            proc.wait()
        stubborn.stdout.close()
