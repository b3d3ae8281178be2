"""The test engines of tests/engines.py work: a real one-node Slurm cluster and a real sshd
on loopback run jobs and commands, and leave nothing behind.  They skip, with the
reason, where the programs are missing or we are not root."""
import os
import subprocess
import sys

import psutil
import pytest

import engines
from engines import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm(slurm_engine):
    """The module's Slurm (conftest.py), its queue empty before and after the test."""
    slurm_engine.wait_for_empty_queue()
    yield slurm_engine
    slurm_engine.scancel()
    slurm_engine.wait_for_empty_queue()


@pytest.fixture
def server(sshd_engine):
    return sshd_engine


def read_when_there(path, timeout, cluster):
    """The text of ``path`` once a job has written it (a line ending in a newline)."""
    wait_for(lambda: os.path.exists(path) and open(path).read().endswith("\n"), timeout,
             f"{path} to be written",
             lambda: f"squeue: {cluster.squeue()}\n{cluster.logs()}")  # fmt: skip
    with open(path) as f:
        return f.read()


@pytest.mark.timeout(60)
def test_sbatch_runs_a_job_that_inherits_the_environment(slurm, tmp_path):
    out = tmp_path / "out.txt"
    job = slurm.sbatch("--wrap", f"echo $SLURM_CONF $SLURM_JOB_ID > {out}")
    assert job.isdigit()
    assert read_when_there(out, 30, slurm).split() == [slurm.conf, job]
    slurm.wait_for_empty_queue()


@pytest.mark.timeout(60)
def test_a_job_array_runs_every_task(slurm, tmp_path):
    slurm.sbatch("--array=0-2", "--wrap",
                 f"echo $SLURM_ARRAY_TASK_ID > {tmp_path}/task-$SLURM_ARRAY_TASK_ID")
    for i in range(3):
        assert read_when_there(tmp_path / f"task-{i}", 30, slurm) == f"{i}\n"
    slurm.wait_for_empty_queue()


@pytest.mark.timeout(60)
def test_several_one_core_jobs_run_at_once(slurm, tmp_path):
    """The node has 8 CPUs whatever the machine has, and CR_Core gives each job one."""
    gate = tmp_path / "gate"
    jobs = [slurm.sbatch("--cpus-per-task=1", "--wrap",
                         f"touch {tmp_path}/started-$SLURM_JOB_ID; "
                         f"while [ ! -e {gate} ]; do sleep 0.1; done")
            for _ in range(4)]  # fmt: skip
    wait_for(lambda: all((tmp_path / f"started-{j}").exists() for j in jobs), 30,
             "4 jobs to run at once",
             lambda: f"squeue: {slurm.squeue()}\n{slurm.logs()}")  # fmt: skip
    gate.touch()
    slurm.wait_for_empty_queue()


@pytest.mark.timeout(60)
def test_scancel_removes_a_long_job(slurm, tmp_path):
    job = slurm.sbatch("--wrap", f"touch {tmp_path}/started; sleep 600")
    wait_for(lambda: (tmp_path / "started").exists(), 30, "the job to start", slurm.logs)
    assert job in slurm.squeue()
    slurm.scancel(job)
    slurm.wait_for_empty_queue(timeout=15)


@pytest.mark.timeout(90)
def test_stopping_slurm_leaves_no_process_behind(tmp_path):
    """A cluster stopped with a job still running takes the job and its daemons along."""
    reason = engines.slurm_unavailable()
    if reason:
        pytest.skip(f"Slurm: {reason}")
    with engines.slurm(tmp_path, cpus=2) as cluster:
        cluster.sbatch("--wrap", f"touch {tmp_path}/started; sleep 600")
        wait_for(lambda: (tmp_path / "started").exists(), 30, "the job to start", cluster.logs)
        daemons = [psutil.Process(d.proc.pid) for d in cluster.daemons]
    assert not [d for d in daemons if d.is_running() and d.status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(engines.EngineError):
        cluster.check()
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SLURM_CONF") == cluster.conf and proc.status() != "zombie":
                left.append(proc)
        except psutil.Error:
            pass
    assert not left


@pytest.mark.timeout(30)
def test_a_daemon_that_dies_at_start_is_reported_with_its_log(tmp_path):
    daemon = engines.Daemon("broken", ["sh", "-c", "echo bad config line 3; exit 3"],
                            tmp_path / "broken.out")  # fmt: skip
    with pytest.raises(engines.EngineError, match="(?s)exited with code 3.*bad config line 3"):
        wait_for(lambda: daemon.check() and False, 10, "never")


@pytest.mark.timeout(30)
def test_ssh_runs_a_command(server):
    out = subprocess.run(server.ssh_command("echo", "hello"), capture_output=True, text=True,
                         timeout=20)  # fmt: skip
    assert out.returncode == 0, out.stderr + server.logs()
    assert out.stdout == "hello\n"


@pytest.mark.timeout(30)
def test_ssh_passes_stdin_through(server):
    data = "".join(f"line {i}\n" for i in range(1000))
    out = subprocess.run(server.ssh_command("cat"), input=data, capture_output=True,
                         text=True, timeout=20)  # fmt: skip
    assert out.returncode == 0, out.stderr + server.logs()
    assert out.stdout == data


@pytest.mark.timeout(30)
def test_ssh_reaches_the_server_under_any_host_name_and_runs_our_python(server):
    """Deploy code may name hosts as it likes; it must start Python by absolute path."""
    command = server.ssh_command(sys.executable, "-c", "'import sys; print(sys.prefix)'",
                                 host="worker-1")  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr + server.logs()
    assert out.stdout == sys.prefix + "\n"
