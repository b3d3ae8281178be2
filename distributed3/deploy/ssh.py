"""A cluster over SSH: the center on the first host, workers on the others.

Each process is started by the system's ``ssh`` client, so the user's keys, agent
and ``~/.ssh/config`` apply, and no password is ever in code.  The secret goes over
the SSH channel, on the remote process's standard input (``--secret-stdin``), never
on a command line; when that channel closes -- ``close()``, or this process ending --
the remote process stops.  Workers also end when their center is gone
(``--death-timeout``).

>>> cluster = SSHCluster(["node0", "node1", "node2"], worker_cores=8)  # doctest: +SKIP
>>> pool = Pool(cluster)                                              # doctest: +SKIP

From a shell, ``dssh node0 node1 node2`` does the same and serves until Ctrl-C.
"""
import argparse
import itertools
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time

from ..core.security import new_secret_file, read_secret_file
from ..utils import format_address, parse_address
from .cluster import Cluster

logger = logging.getLogger(__name__)


class SSHCluster(Cluster):
    """The center on ``hosts[0]`` and a worker on each of ``hosts[1:]`` (or on
    ``hosts[0]`` too, when it is the only one), reached with ``ssh``.

    ``ssh_options``: extra ``ssh`` arguments (``["-F", "config", "-p", "2222"]``).
    ``python``: the interpreter on the hosts (default: this one's path).
    ``center_host``: the address workers reach the center at (default: ``hosts[0]``).
    ``workers_per_host``: how many workers each host runs at first.
    """

    engine = "ssh"

    def __init__(self, hosts, *, ssh_options=(), python=sys.executable, center_host=None,
                 center_port=0, workers_per_host=1, connect_timeout=30, **kwargs):  # fmt: skip
        if not hosts:
            raise ValueError("SSHCluster needs at least one host")
        super().__init__(**kwargs)
        self.hosts = list(hosts)
        self.worker_hosts = self.hosts[1:] or self.hosts[:1]
        self.ssh_options = list(ssh_options)
        self.python = python
        self.center_host = center_host or self.hosts[0]
        self.center_port = center_port
        self.connect_timeout = connect_timeout
        self._procs = {}  # name -> the local ssh process
        self._next_host = itertools.cycle(self.worker_hosts)
        try:
            self._start_remote_center()
            self.status = "running"
            self.scale(len(self.worker_hosts) * workers_per_host)
        except BaseException:
            self.close()
            raise

    def _ssh(self, host, name, remote):
        """Run ``remote`` (a list) on ``host``; the secret on its stdin, its output into
        ``name``'s log."""
        os.makedirs(self.log_directory, exist_ok=True)
        cmd = ["ssh", "-o", f"ConnectTimeout={self.connect_timeout}", *self.ssh_options,
               host, "--", shlex.join(remote)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        proc.stdin.write(self.secret + b"\n")
        proc.stdin.flush()  # and kept open: closing it stops the remote process
        proc.log = open(self._log_path(name), "ab")
        proc.reader = threading.Thread(target=_copy, args=(proc.stdout, proc.log), daemon=True)
        proc.reader.start()
        return proc

    def _start_remote_center(self):
        remote = [self.python, "-m", "distributed3.deploy.cli", "center", "--host",
                  self.center_host, "--port", str(self.center_port), "--secret-stdin"]
        remote += self.dashboard_args()
        self._center = self._ssh(self.hosts[0], "center", remote)
        line = self._wait_for_log("center", r"Started center at (\S+)", self._center)
        self.center_address = parse_address(line.group(1))
        self.call_center("ncores")  # reachable from here, and the secret works

    def _log_path(self, name):
        return os.path.join(self.log_directory, f"{name}.log")

    def _wait_for_log(self, name, pattern, proc):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with open(self._log_path(name), errors="replace") as f:
                found = re.search(pattern, f.read())
            if found:
                return found
            if proc.poll() is not None:
                proc.reader.join(1)
                break
            time.sleep(0.05)
        with open(self._log_path(name), errors="replace") as f:
            said = f.read()[-2000:]
        raise RuntimeError(f"the {name} on {self.hosts[0]} did not start (ssh exit status "
                           f"{proc.poll()}); its output:\n{said}")  # fmt: skip

    def _launch(self, names):
        launched = {}
        for name in names:
            host = next(self._next_host)
            remote = [self.python, "-m", "distributed3.deploy.cli", "worker",
                      format_address(self.center_address), *self.worker_args(name),
                      "--secret-stdin"]  # fmt: skip
            self._procs[name] = self._ssh(host, name, remote)
            launched[name] = host
        return launched

    def _stop(self, names):
        procs = [self._procs.pop(n) for n in names if n in self._procs]
        _hang_up(procs, self.timeout)

    def _alive(self):
        for name in [n for n, p in self._procs.items() if p.poll() is not None]:
            _release(self._procs.pop(name))  # it ended (retired, say): its pipes go too
        return set(self._procs)

    def close(self):
        """Stop the workers and the center (closing their channels), then ssh."""
        try:
            super().close()
        finally:
            if self._center is not None:
                _hang_up([self._center], self.timeout)
                self._center = None


def _copy(stream, log):
    with log:
        for line in iter(stream.readline, b""):
            log.write(line)
            log.flush()


def _hang_up(procs, timeout):
    """Close each remote process's standard input (it stops itself), then wait for
    ``ssh`` to end; terminate what is left after ``timeout`` s."""
    for p in procs:
        try:
            p.stdin.close()
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        _release(p)


def _release(proc):
    """Close what this process holds of an ``ssh`` that ended: its pipes, its reader."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    proc.reader.join(5)  # it reads to the end of ssh's output, then closes the log
    if not proc.reader.is_alive():
        proc.stdout.close()


def dssh(argv=None):
    """Entry point of ``dssh HOST [HOST ...]``: a cluster over SSH until interrupted."""
    parser = argparse.ArgumentParser(prog="dssh", description=(
        "Start a distributed3 center on the first host and a worker on each other one, "
        "over ssh; serve until Ctrl-C."))  # fmt: skip
    parser.add_argument("hosts", nargs="+", help="hosts, as ssh knows them")
    parser.add_argument("--ncores", type=int, default=1, help="cores of each worker")
    parser.add_argument("--workers-per-host", type=int, default=1)
    parser.add_argument("--center-host", help="the address workers reach the center at")
    parser.add_argument("--center-port", type=int, default=8787)
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter on the hosts (default: this one's path)")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                        help="an argument for ssh, e.g. --ssh-option=-F --ssh-option=config")
    parser.add_argument("--secret-file", required=True, metavar="PATH",
                        help="the cluster's secret: read if it exists, else written (0600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(levelname)s - %(message)s")
    secret = _secret_from(args.secret_file)
    with SSHCluster(args.hosts, ssh_options=args.ssh_option, python=args.python,
                    center_host=args.center_host, center_port=args.center_port,
                    worker_cores=args.ncores, workers_per_host=args.workers_per_host,
                    secret=secret) as cluster:  # fmt: skip
        address = format_address(cluster.center_address)
        cluster.wait_for_workers(len(cluster.workers))
        print(f"Cluster up: center {address}, {len(cluster.workers)} workers; logs in "
              f"{cluster.log_directory}\nConnect with Pool({address!r}, "
              f"secret=open({args.secret_file!r}).read().strip())", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


def _secret_from(path):
    if not os.path.exists(path):
        new_secret_file(path)
    return read_secret_file(path)


if __name__ == "__main__":
    dssh()
