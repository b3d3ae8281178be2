"""SSHCluster and dssh against a real sshd on loopback (tests/engines.py)."""
import os
import signal
import urllib.request
import sys

import psutil
import pytest

from distributed3 import Pool
from distributed3.deploy.ssh import SSHCluster
from distributed3.testing import BIN, Proc
from distributed3.utils import wait_for_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
def sshd(sshd_engine):
    return sshd_engine  # conftest.py: started once for the module


def remote_processes(address):
    """The worker processes (nannies and workers) that sshd started for ``address``."""
    found = []
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "distributed3.deploy.cli worker" in cmd and address in cmd and p.info["name"] != "ssh":
            found.append(p)
    return found


def test_an_ssh_cluster_computes_and_leaves_nothing_running(sshd, tmp_path):
    with SSHCluster(["127.0.0.1", "127.0.0.1", "localhost"], ssh_options=["-F", sshd.config],
                    center_host="127.0.0.1", death_timeout=5, dashboard_port=0,
                    dashboard_host="127.0.0.1",
                    log_directory=str(tmp_path / "logs")) as cluster:  # fmt: skip
        cluster.wait_for_workers(2)
        address = "%s:%d" % cluster.center_address
        with Pool(cluster) as pool:
            A = pool.map(lambda x: x**2, range(10))
            assert pool.apply(sum, [pool.map(lambda x: -x, A)]).get() == -285
            # the remote center's dashboard, with the cluster's token
            with urllib.request.urlopen(pool.dashboard_link, timeout=10) as page:
                assert page.status == 200
        assert len(remote_processes(address)) == 4  # two workers, each under its nanny
        logs = cluster.logs()
        assert all("Register with center" in logs[w] for w in cluster.workers)
        # the secret went over the channel: no process shows it on its command line
        secret = cluster.secret.decode()
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if secret in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    wait_for_sync(lambda: not remote_processes(address), 20, "processes left after close()")


def test_a_worker_stops_when_its_ssh_channel_is_cut(sshd, tmp_path):
    with SSHCluster(["127.0.0.1", "127.0.0.1"], ssh_options=["-F", sshd.config],
                    log_directory=str(tmp_path / "logs")) as cluster:  # fmt: skip
        cluster.wait_for_workers(1)
        [name] = cluster.workers
        workers = remote_processes("%s:%d" % cluster.center_address)
        os.kill(cluster._procs[name].pid, signal.SIGKILL)  # the launcher's ssh dies
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive  # the worker and its nanny
        wait_for_sync(lambda: not cluster.registered(), 20, "the center still lists it")


def test_workers_end_when_the_center_is_killed(sshd, tmp_path):
    with SSHCluster(["127.0.0.1", "127.0.0.1"], ssh_options=["-F", sshd.config],
                    death_timeout=2, log_directory=str(tmp_path / "logs")) as cluster:
        cluster.wait_for_workers(1)
        workers = remote_processes("%s:%d" % cluster.center_address)
        os.kill(listening_pid(cluster.center_address[1]), signal.SIGKILL)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive  # the worker and its nanny
        [name] = cluster.started
        assert "No center at" in cluster.logs()[name]


def listening_pid(port):
    """The process listening on ``port`` here: the center that ssh started."""
    [pid] = {c.pid for c in psutil.net_connections("tcp")
             if c.status == psutil.CONN_LISTEN and c.laddr.port == port}  # fmt: skip
    return pid


def test_dssh_starts_a_cluster_from_the_shell(sshd, tmp_path):
    secret_file = tmp_path / "secret"
    cmd = [sys.executable, os.path.join(BIN, "dssh"), "--ssh-option=-F",
           f"--ssh-option={sshd.config}", "--center-port", "0", "--secret-file",
           str(secret_file), "127.0.0.1", "127.0.0.1", "127.0.0.1"]  # fmt: skip
    with Proc(cmd) as dssh:
        address = dssh.wait_for_line(r"Cluster up: center (\S+), 2 workers", 60).group(1)
        with Pool(address, secret=secret_file.read_text().strip()) as pool:
            assert pool.nworkers == 2
            assert pool.gather(pool.map(lambda x: x + 1, range(5))) == [1, 2, 3, 4, 5]
        dssh.signal(signal.SIGINT)
        assert dssh.wait(30) == 0
    wait_for_sync(lambda: not remote_processes(address), 20, "processes left after dssh")
    assert oct(os.stat(secret_file).st_mode & 0o777) == "0o600"


def test_a_retired_worker_leaves_no_ssh_process_or_pipe_behind(sshd, tmp_path):
    with SSHCluster(["127.0.0.1", "127.0.0.1", "localhost"], ssh_options=["-F", sshd.config],
                    log_directory=str(tmp_path / "logs")) as cluster:  # fmt: skip
        cluster.wait_for_workers(2)
        procs = dict(cluster._procs)
        cluster.scale(1)
        wait_for_sync(lambda: len(cluster.workers) == 1, 30, "the retired worker stays")
        [gone] = set(procs) - set(cluster.workers)
        assert procs[gone].returncode is not None  # its ssh was reaped
        assert procs[gone].stdin.closed and procs[gone].stdout.closed  # no pipe kept open
        assert set(cluster._procs) == set(cluster.workers)
