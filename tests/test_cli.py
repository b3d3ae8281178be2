"""End to end through real ``bin/dcenter`` and ``bin/dworker`` processes."""
import os
import signal
import socket
import time
import subprocess
import sys

import pytest

from distributed3 import Pool, WorkerLostError
from distributed3.testing import BIN, Proc, process_cluster
from distributed3.utils import wait_for_sync

pytestmark = pytest.mark.slow

DCENTER = os.path.join(BIN, "dcenter")
DWORKER = os.path.join(BIN, "dworker")


def test_issue_example_with_real_processes():
    with process_cluster(nworkers=2, ncores=2) as (address, center, workers):
        pool = Pool(address)
        try:
            pool.sync_center()
            workers_seen = {f"{h}:{p}" for h, p in pool.available_cores}
            assert len(pool.available_cores) == 2
            assert set(pool.available_cores.values()) == {2}
            A = pool.map(lambda x: x**2, range(10))
            B = pool.map(lambda x: -x, A)
            total = pool.apply(sum, [B])
            assert total.get() == -285
            assert pool.gather(A) == [x**2 for x in range(10)]
            assert repr(A[0]).startswith(f"RemoteData<center={address}, key=")
            info = pool.worker_info()
            assert sum(i["tasks_done"] for i in info.values()) == 21
            # the maps moved nothing; only the final sum pulled the remote half of B
            assert sorted(i["peer_bytes_in"] for i in info.values())[0] == 0
        finally:
            pool.close()
        printed = {w.wait_for_line(r"Start worker at (\S+)").group(1) for w in workers}
        assert printed == workers_seen


def test_startup_messages_and_clean_shutdown():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (127\.0\.0\.1:\d+)").group(1)
        with Proc([DWORKER, address, "--name", "alice", "--ncores", "3"]) as worker:
            waddr = worker.wait_for_line(r"Start worker at (127\.0\.0\.1:\d+)").group(1)
            worker.wait_for_line(rf"Register with center at {address}")
            center.wait_for_line(rf"Register worker {waddr} with 3 cores")
            with Pool(address) as pool:
                assert list(pool.available_cores.values()) == [3]
                worker.signal(signal.SIGTERM)
                assert worker.wait() == 0
                center.wait_for_line(rf"Remove worker {waddr}: it left")
                wait_for_sync(lambda: pool.nworkers == 0, 10, "pool still sees the worker")
        center.signal(signal.SIGINT)
        assert center.wait() == 0


def test_help():
    for exe, options in [(DCENTER, ["--host", "--port", "--secret-file"]),
                         (DWORKER, ["--host", "--port", "--ncores", "--name"])]:  # fmt: skip
        with Proc([exe, "--help"]) as proc:
            assert proc.wait() == 0
            for option in options:
                assert option in proc.output


def test_refuses_public_address_without_secret():
    with Proc([DCENTER, "--host", "0.0.0.0", "--port", "0"]) as proc:
        assert proc.wait() != 0
        assert "refusing to listen on 0.0.0.0 without a secret" in proc.output
        assert "Started center" not in proc.output


def test_secret_file_and_wrong_secret(tmp_path):
    good = tmp_path / "secret"
    good.write_text("correct horse battery staple\n")
    with Proc([DCENTER, "--port", "0", "--secret-file", str(good)]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address], env={"DISTRIBUTED3_SECRET": "wrong"}) as bad:
            assert bad.wait() != 0
            assert "rejected our secret" in bad.output
        center.wait_for_line(r"refused a connection from .*wrong secret")
        with Proc([DWORKER, address, "--secret-file", str(good)]) as worker:
            worker.wait_for_line("Register with center")
            with Pool(address, secret="correct horse battery staple") as pool:
                assert pool.apply(lambda: "ok").get() == "ok"


def test_worker_without_center_fails_clearly():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
    # the center is gone now: nothing listens on that port
    with Proc([DWORKER, address]) as worker:
        assert worker.wait() != 0
        assert f"could not connect to {address}" in worker.output


def test_exposure_check_refuses_or_warns(caplog):
    from distributed3.deploy.serving import check_exposure

    check_exposure("127.0.0.1", None, insecure=False)  # loopback: fine without a secret
    check_exposure("10.1.2.3", b"secret", insecure=False)  # a secret: fine anywhere
    with pytest.raises(SystemExit, match="refusing to listen on 10.1.2.3 without a secret"):
        check_exposure("10.1.2.3", None, insecure=False)
    with caplog.at_level("WARNING"):
        check_exposure("10.1.2.3", None, insecure=True)
    assert "INSECURE: listening on 10.1.2.3 without a secret" in caplog.text


def test_dworker_stops_at_once_while_its_center_does_not_answer():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says hello
        port = silent.getsockname()[1]
        with Proc([os.path.join(BIN, "dworker"), f"127.0.0.1:{port}"]) as w:
            silent.settimeout(15)
            conn, _ = silent.accept()  # the worker waits for the handshake now
            with conn:
                w.signal(signal.SIGTERM)
                w.wait(timeout=5)  # not the handshake's 10 s time-out


def test_max_tasks_and_lifetime_retire_gracefully():
    with Proc([DCENTER, "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--ncores", "1"]), \
             Proc([DWORKER, address, "--ncores", "1", "--max-tasks", "5"]) as short:  # fmt: skip
            with Pool(address) as pool:
                pool.wait_for_workers(2, timeout=20)
                outs = []  # maps until the short one has run its 5 and left (the other
                deadline = time.monotonic() + 30  # may take a whole small map by itself)
                while short.proc.poll() is None:
                    assert time.monotonic() < deadline, "the short-lived worker never retired"
                    outs.append(pool.map(lambda x: x * 2, range(40)))
                assert short.wait() == 0
                short.wait_for_line(r"Retiring: it has run \d+ tasks")
                for out in outs:  # handed off, not lost
                    assert pool.gather(out) == [x * 2 for x in range(40)]
                with Proc([DWORKER, address, "--lifetime", "0.5"]) as brief:
                    brief.wait_for_line("Register with center")
                    data = pool.scatter(list(range(10)))
                    assert brief.wait() == 0
                    brief.wait_for_line(r"Retiring: its lifetime of 0.5 s is over")
                    assert pool.gather(data) == list(range(10))


@pytest.mark.timeout(30)
def test_dcenter_raises_its_open_files_limit_to_the_hard_one():
    """Started with a soft limit of 256, the center (a socket per worker and client)
    runs with the hard limit."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here is {hard}: nothing to raise")

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen([sys.executable, os.path.join(BIN, "dcenter"), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, preexec_fn=lower)  # fmt: skip
    try:
        for line in proc.stderr:
            if "Started center" in line:
                break
        with open(f"/proc/{proc.pid}/limits") as f:
            row = next(r for r in f if r.startswith("Max open files"))
        soft = row.split()[3]
        assert soft == ("unlimited" if hard == resource.RLIM_INFINITY else str(hard))
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.timeout(60)
def test_a_worker_killed_9_comes_back_under_its_nanny_which_stops_with_it():
    import psutil

    with Proc([os.path.join(BIN, "dcenter"), "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--ncores", "1"]) as nanny, Pool(address) as pool:
            pool.wait_for_workers(1, timeout=20)
            [first] = [i["pid"] for i in pool.worker_info().values()]
            assert first != nanny.proc.pid  # the worker is the nanny's child
            os.kill(first, signal.SIGKILL)
            nanny.wait_for_line(rf"Worker process {first} was killed by SIGKILL.*starting a new")

            def replaced():
                try:
                    pids = [i["pid"] for i in pool.worker_info().values()]
                except Exception:  # the dead one may still be listed for a moment
                    return False
                return pids and first not in pids

            wait_for_sync(replaced, 20, "the nanny's new worker never joined")
            [death] = pool.worker_deaths()  # what the nanny told the center
            assert death["pid"] == first and "was killed by SIGKILL" in death["cause"]
            center.wait_for_line(rf"process {first}, was killed by SIGKILL")
            [second] = [i["pid"] for i in pool.worker_info().values()]
            assert pool.apply(sum, [[1, 2]]).get() == 3
            nanny.signal(signal.SIGTERM)
            assert nanny.wait(15) == 0
            wait_for_sync(lambda: not psutil.pid_exists(second)
                          or psutil.Process(second).status() == psutil.STATUS_ZOMBIE,
                          10, "the worker outlived its nanny")  # fmt: skip


@pytest.mark.timeout(60)
def test_a_worker_that_keeps_dying_makes_its_nanny_give_up():
    """--max-restarts 1: a worker whose center refuses it (wrong secret) dies at once."""
    with Proc([os.path.join(BIN, "dcenter"), "--port", "0"],
              {"DISTRIBUTED3_SECRET": "right"}) as center:  # fmt: skip
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([DWORKER, address, "--max-restarts", "1"],
                  {"DISTRIBUTED3_SECRET": "wrong"}) as nanny:  # fmt: skip
            nanny.wait_for_line(r"died 2 times within 60 s: giving up", timeout=30)
            assert nanny.wait(15) == 1


@pytest.mark.timeout(90)
def test_a_worker_over_its_memory_is_killed_by_its_nanny_and_the_task_blamed():
    """Past --memory-terminate, the nanny kills the worker and starts a new one; the task
    that grew it kills the new one too, and fails naming the cause."""

    def hog(nbytes):  # holds nbytes of touched memory until the nanny kills its process
        import threading

        hold = b"x" * nbytes
        threading.Event().wait(60)  # never set: the test fails first if no kill comes
        return len(hold)

    with Proc([os.path.join(BIN, "dcenter"), "--port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        args = [DWORKER, address, "--ncores", "1", "--memory-limit", "200MB",
                "--memory-terminate", "0.5"]  # fmt: skip
        with Proc(args) as nanny, Pool(address) as pool:
            pool.wait_for_workers(1, timeout=20)
            task = pool.apply(hog, [300_000_000], retries=1)
            with pytest.raises(WorkerLostError, match=r"was running on 2 workers that died.*"
                                                      r"stopped by its nanny: it used \d+ MB"):
                task.get(timeout=60)
            nanny.wait_for_line(r"over its \d+ MB: restarting it")
            assert [d["cause"].startswith("was stopped by its nanny") for d in
                    pool.worker_deaths()] == [True, True]  # fmt: skip
            pool.wait_for_workers(1, timeout=20)  # and the third one serves
            assert pool.apply(sum, [[1, 2]]).get(timeout=20) == 3


def test_a_center_port_in_use_is_refused_not_moved():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, os.path.join(BIN, "dcenter"), "--port", str(port)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "another dcenter?" in out.stderr and "--port 0" in out.stderr


def test_a_worker_waits_for_a_center_that_comes_up_later():
    with socket.socket() as probe:  # a free port for the center to take later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    with Proc([os.path.join(BIN, "dworker"), address, "--no-nanny", "--center-wait", "30"]) as w:
        w.wait_for_line("Waiting up to 30 s for the center")
        with Proc([os.path.join(BIN, "dcenter"), "--port", str(port)]) as center:
            center.wait_for_line("Started center")
            w.wait_for_line("Register with center", 15)
            with Pool(address) as pool:
                assert pool.apply(abs, (-5,)).get() == 5
    with Proc([os.path.join(BIN, "dworker"), address, "--no-nanny"]) as alone:
        assert alone.wait(15) != 0  # no --center-wait: it says why at once, and stops
        assert "could not connect" in alone.output


def test_options_from_the_environment_and_a_config_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[worker]\nname = "from-file"\nncores = 3\n')
    env = {"DISTRIBUTED3_CONFIG": str(config), "DISTRIBUTED3_WORKER_NCORES": "2",
           "DISTRIBUTED3_CENTER_PORT": "0"}  # fmt: skip
    with Proc([DCENTER], env) as center:  # its port from the environment: any free one
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        with Proc([os.path.join(BIN, "dworker"), address, "--no-nanny"], env) as worker:
            worker.wait_for_line("Register with center")
            with Pool(address) as pool:
                (info,) = pool.worker_info().values()
        # the environment over the file, the file over the built-in default
        assert (info["ncores"], info["name"]) == (2, "from-file")
    config.write_text("[worker]\nno-such-option = 1\n")
    out = subprocess.run([sys.executable, os.path.join(BIN, "dworker"), "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, DISTRIBUTED3_CONFIG=str(config)))  # fmt: skip
    assert out.returncode != 0 and "[worker] has no option 'no-such-option'" in out.stderr


def test_python_dash_m_distributed3():
    out = subprocess.run([sys.executable, "-m", "distributed3", "version"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith("python ")
    with Proc([sys.executable, "-m", "distributed3", "center", "--port", "0"]) as center:
        center.wait_for_line(r"Started center at (\S+)")
