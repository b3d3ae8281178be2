"""Real job engines on loopback for tests: a one-node Slurm cluster and an sshd.

::

    test process                         tmpdir/ (everything lives here)
    ------------                         --------------------------------
    slurm(tmpdir) --starts--> munged  -- munge.socket, munge.key, munged.log
                  --starts--> slurmctld -D -f slurm.conf   (127.0.0.1:<free port>)
                  --starts--> slurmd -D -f slurm.conf      (127.0.0.1:<free port>)
         .env = {"SLURM_CONF": ...}  --> sbatch / squeue / scancel / sinfo
    sshd(tmpdir)  --starts--> sshd -D -e -f sshd_config    (127.0.0.1:<free port>)
         .config (ssh -F) ----------> ssh to any host name lands on that sshd

Each context manager finds free ports by binding port 0, keeps every file (configs,
keys, logs, state, pid files, sockets) under the directory it is given, waits on
conditions with a deadline rather than sleeping, and stops what it started on exit,
even when the body raised.  A daemon that dies while starting raises
:class:`EngineError` with the end of its log.  In a pytest fixture::

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        reason = engines.slurm_unavailable()
        if reason:
            pytest.skip(reason)
        with engines.slurm(tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster

    def test_job(cluster):
        job = cluster.sbatch("--wrap", "touch done")   # runs in cluster.tmpdir
        engines.wait_for(lambda: not cluster.squeue(), 20, "the job to end", cluster.logs)

Notes for deploy code run against these engines (SLURMCluster, SSHCluster):

* A job submitted with ``sbatch`` inherits the submitting environment by default
  (``--export=ALL``), ``SLURM_CONF`` and a virtualenv's ``PATH`` included; merge
  ``cluster.env`` into the environment that runs ``sbatch``/``squeue``/``scancel``.
* A command run through ``ssh`` gets the remote user's login environment: ``PATH`` may
  lack the virtualenv, so start Python by absolute path (``sys.executable``), never as
  ``python``.  ``ssh -F server.config <any host name>`` reaches the test sshd as the
  current user (root here), non-interactively (``BatchMode``).
* slurmd and slurmctld are asked to bind 127.0.0.1 only
  (``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny``); a job step's slurmstepd may
  still open ephemeral ports on every interface (srun I/O), which Slurm offers no way to
  restrict.  munged listens on a Unix socket only.
"""
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time

import psutil

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
SLURM_PROGRAMS = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]
SSH_PROGRAMS = ["sshd", "ssh", "ssh-keygen"]


class EngineError(RuntimeError):
    """An engine's daemon died or never became ready; the message holds its log's end."""


def which(program):
    """The absolute path of ``program``, looking in ``/usr/sbin`` and ``/sbin`` too, or None.

    >>> which("sh").endswith("/sh")
    True
    """
    return shutil.which(program, path=SBIN_PATH)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound port 0, then closed).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, details=lambda: ""):
    """Poll ``predicate()`` until it is true; after ``timeout`` s raise ``TimeoutError``
    naming ``what`` (the condition waited for) and the text ``details()`` returns then.

    >>> wait_for(lambda: True, 1, "truth")
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            extra = details()
            raise TimeoutError(f"waited {timeout} s for {what}" + (f"\n{extra}" if extra else ""))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


def tail(path, lines=30):
    """The last ``lines`` lines of the file at ``path`` ('' when there is none).

    >>> tail("/nonexistent/log")
    ''
    """
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Daemon:
    """One real program in the foreground of a subprocess, its output in a file.

    ::

        d = Daemon("munged", ["munged", "-F", ...], "/tmp/x/munged.out", env)
        d.check()   # raises EngineError with the log's end if it has exited
        d.stop()    # SIGTERM to its process group, then SIGKILL after a deadline

    It runs in a session of its own, so that :meth:`stop` reaches whatever it forked
    and left in its process group.
    """

    def __init__(self, name, args, out, env=None, logs=()):
        self.name = name
        self.args = list(args)
        self.out = str(out)
        self.logs = [self.out, *map(str, logs)]
        with open(self.out, "ab") as f:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip

    def tail(self, lines=30):
        """The ends of its output and log files, each under its name."""
        parts = []
        for path in dict.fromkeys(self.logs):
            text = tail(path, lines)
            if text:
                parts.append(f"--- {self.name}: {path}\n{text}")
        return "".join(parts)

    def check(self):
        """Raise :class:`EngineError` with its log's end if it has exited; True otherwise."""
        code = self.proc.poll()
        if code is not None:
            raise EngineError(f"{self.name} exited with code {code}: {self.args}\n{self.tail()}")
        return True

    def stop(self, timeout=10):
        """Terminate it (its whole process group), kill it after ``timeout`` s, reap it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue


def _unavailable(programs, needs_root):
    missing = [p for p in programs if not which(p)]
    if missing:
        return (f"{', '.join(missing)} not installed (run tests/system-packages.sh as root)")
    if needs_root and os.geteuid() != 0:
        return "starting it needs root"
    return None


def slurm_unavailable():
    """Why :func:`slurm` cannot run here (programs missing, not root), or None if it can.

    >>> slurm_unavailable() is None or isinstance(slurm_unavailable(), str)
    True
    """
    return _unavailable(SLURM_PROGRAMS, needs_root=True)


def sshd_unavailable():
    """Why :func:`sshd` cannot run here (programs missing, not root), or None if it can.

    >>> sshd_unavailable() is None or isinstance(sshd_unavailable(), str)
    True
    """
    return _unavailable(SSH_PROGRAMS, needs_root=True)


def slurm_nodename():
    """This machine's name as slurmd knows it: the short host name, as ``slurmd -C`` says.

    slurmd finds its own ``NodeName`` line by that name, so the node must be called so.
    """
    name = socket.gethostname().split(".")[0]
    slurmd = which("slurmd")
    if slurmd:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=10)
            for word in out.stdout.split():
                if word.startswith("NodeName="):
                    return word.split("=", 1)[1]
    return name


SLURM_CONF = """\
# a one-node cluster on loopback for tests (tests/engines.py); everything under {tmp}
ClusterName=d3test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS={tmp}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=10
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
MinJobAge=10
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
NodeName={node} NodeHostname={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    """A running one-node Slurm cluster, as :func:`slurm` yields it.

    ::

        cluster.env          # {"SLURM_CONF": ...}: merge into os.environ for sbatch & co
        cluster.conf         # path of slurm.conf
        cluster.tmpdir       # where everything lives; sbatch runs there, so output too
        cluster.node, cluster.cpus
        cluster.run("sinfo") # a Slurm command with cluster.env, in tmpdir: CompletedProcess
        job = cluster.sbatch("--array=0-2", "--wrap", "hostname")   # the job id, a str
        cluster.squeue()     # ["12", "13_[1-2]", "13_0"]: the jobs squeue knows now
        cluster.scancel(job)
        cluster.wait_for_empty_queue(timeout=20)
        cluster.logs()       # the daemons' log ends, for failure messages
    """

    def __init__(self, tmpdir, conf, node, cpus, daemons):
        self.tmpdir = str(tmpdir)
        self.conf = str(conf)
        self.node = node
        self.cpus = cpus
        self.env = {"SLURM_CONF": self.conf}
        self.daemons = daemons

    def run(self, *args, check=True, timeout=30):
        """Run a Slurm command (``"sbatch", ...``) against this cluster; its CompletedProcess.

        Raises :class:`EngineError` with the command's output and the daemons' logs when
        it fails and ``check`` is true.
        """
        program = which(args[0]) or args[0]
        out = subprocess.run([program, *args[1:]], capture_output=True, text=True,
                             env={**os.environ, **self.env}, cwd=self.tmpdir,
                             timeout=timeout)  # fmt: skip
        if check and out.returncode:
            raise EngineError(f"{list(args)} failed with code {out.returncode}:\n"
                              f"{out.stdout}{out.stderr}\n{self.logs()}")  # fmt: skip
        return out

    def sbatch(self, *args):
        """Submit a job (``sbatch --parsable *args``) from ``tmpdir``; its job id."""
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def squeue(self):
        """The ids of the jobs squeue lists now (pending, running, completing), as str."""
        return self.run("squeue", "--noheader", "--format=%i").stdout.split()

    def scancel(self, *jobs):
        """Cancel the given jobs, or every job of the current user when none is given."""
        self.run("scancel", *(jobs or ["--user", getpass.getuser()]))

    def node_state(self):
        """The node's state as sinfo prints it: ``idle``, ``mix``, ``alloc``, ``down*`` ..."""
        return self.run("sinfo", "--noheader", "--format=%t", "--nodes", self.node,
                        check=False).stdout.strip()  # fmt: skip

    def wait_for_empty_queue(self, timeout=20):
        """Wait until squeue lists no job; ``TimeoutError`` with the queue and logs if not."""
        wait_for(lambda: not self.squeue(), timeout, "squeue to empty",
                 lambda: f"squeue: {self.squeue()}\n{self.logs()}")  # fmt: skip

    def logs(self, lines=30):
        """The ends of munged's, slurmctld's and slurmd's output and log files."""
        return "".join(d.tail(lines) for d in self.daemons)

    def check(self):
        """True while every daemon runs; :class:`EngineError` with the logs otherwise."""
        return all(d.check() for d in self.daemons)


@contextlib.contextmanager
def slurm(tmpdir, cpus=8, memory=4000, timeout=30):
    """Start munged, slurmctld and slurmd on loopback in ``tmpdir``; yield a :class:`Slurm`.

    The node claims ``cpus`` CPUs, whatever the machine has (one core each, several
    one-core jobs at once), in a partition ``debug`` with no time limit.  Returns once
    sinfo shows the node idle (within ``timeout`` s).  On exit: every job is cancelled,
    the daemons are terminated (killed if they linger) and any job process still
    carrying this cluster's ``SLURM_CONF`` is killed.
    """
    tmp = os.path.abspath(str(tmpdir))
    for sub in ("state", "spool"):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
    node = slurm_nodename()
    munge_socket = os.path.join(tmp, "munge.socket")
    conf = os.path.join(tmp, "slurm.conf")
    with open(conf, "w") as f:
        f.write(SLURM_CONF.format(tmp=tmp, node=node, cpus=cpus, memory=memory,
                                  ctld_port=free_port(), slurmd_port=free_port(),
                                  munge_socket=munge_socket))  # fmt: skip
    key = os.path.join(tmp, "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o400)

    env = {**os.environ, "SLURM_CONF": conf}
    daemons = []
    cluster = Slurm(tmp, conf, node, cpus, daemons)
    try:
        daemons.append(Daemon("munged", [
            which("munged"), "--foreground", "--force", f"--socket={munge_socket}",
            f"--key-file={key}", f"--log-file={tmp}/munged.log",
            f"--pid-file={tmp}/munged.pid", f"--seed-file={tmp}/munged.seed",
        ], f"{tmp}/munged.out", env, [f"{tmp}/munged.log"]))  # fmt: skip
        wait_for(lambda: cluster.check() and os.path.exists(munge_socket), timeout,
                 "munged's socket", cluster.logs)  # fmt: skip
        daemons.append(Daemon("slurmctld", [which("slurmctld"), "-D", "-f", conf],
                              f"{tmp}/slurmctld.out", env, [f"{tmp}/slurmctld.log"]))
        daemons.append(Daemon("slurmd", [which("slurmd"), "-D", "-f", conf],
                              f"{tmp}/slurmd.out", env, [f"{tmp}/slurmd.log"]))
        wait_for(lambda: cluster.check() and cluster.node_state() == "idle", timeout,
                 f"node {node} to be idle in sinfo",
                 lambda: f"sinfo: {cluster.node_state()!r}\n{cluster.logs()}")  # fmt: skip
        yield cluster
    finally:
        _stop_slurm(cluster)


def _stop_slurm(cluster):
    with contextlib.suppress(Exception):  # the daemons may be down already
        if cluster.daemons and all(d.proc.poll() is None for d in cluster.daemons):
            cluster.scancel()
            wait_for(lambda: not cluster.squeue(), 15, "cancelled jobs to end")
    for daemon in reversed(cluster.daemons):
        daemon.stop()
    # slurmstepd and the jobs leave slurmd's session; they carry SLURM_CONF along (so
    # may this process and its parents, if a test merged cluster.env into os.environ)
    us = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    leftovers = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid not in us and proc.environ().get("SLURM_CONF") == cluster.conf:
                proc.kill()
                leftovers.append(proc)
    psutil.wait_procs(leftovers, timeout=5)


class SSHServer:
    """A running sshd on loopback, as :func:`sshd` yields it.

    ::

        server.host, server.port   # "127.0.0.1", the free port it listens on
        server.config              # ssh client config: `ssh -F server.config anyname cmd`
        server.user                # who ssh logs in as (the current user)
        subprocess.run(server.ssh_command("echo", "hello"), capture_output=True)
        server.logs()              # sshd's log end, for failure messages
    """

    host = "127.0.0.1"

    def __init__(self, port, config, user, daemon):
        self.port = port
        self.config = str(config)
        self.user = user
        self.daemon = daemon

    def ssh_command(self, *remote, host=None):
        """``["ssh", "-F", config, host, *remote]``: run ``remote`` on the test sshd.

        Any host name reaches it (the config says ``Host *``); ``host`` defaults to
        ``127.0.0.1``.
        """
        return [which("ssh"), "-F", self.config, host or self.host, *remote]

    def logs(self, lines=30):
        """The end of sshd's log (it logs to stderr, ``-e``)."""
        return self.daemon.tail(lines)


SSHD_CONFIG = """\
# an sshd on loopback for tests (tests/engines.py); everything under {tmp}
ListenAddress 127.0.0.1
Port {port}
HostKey {tmp}/host_key
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {tmp}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PrintMotd no
X11Forwarding no
LogLevel INFO
"""

SSH_CONFIG = """\
# the ssh client's side of {tmp}/sshd_config: every host name goes to that sshd
Host *
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {tmp}/user_key
    IdentitiesOnly yes
    UserKnownHostsFile {tmp}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking accept-new
    BatchMode yes
    LogLevel ERROR
    ControlMaster no
    ControlPath none
"""


@contextlib.contextmanager
def sshd(tmpdir, timeout=20):
    """Start an sshd on 127.0.0.1, a free port, its keys and config in ``tmpdir``;
    yield an :class:`SSHServer` once the port accepts and answers with its SSH banner.

    A fresh ed25519 host key and user key pair are made; the user key alone is
    authorized (no passwords).  On exit sshd is terminated (killed if it lingers).
    """
    tmp = os.path.abspath(str(tmpdir))
    os.makedirs(tmp, exist_ok=True)
    keygen = which("ssh-keygen")
    for name in ("host_key", "user_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"distributed3-{name}",
                        "-f", os.path.join(tmp, name)], check=True, timeout=30)  # fmt: skip
    shutil.copy(os.path.join(tmp, "user_key.pub"), os.path.join(tmp, "authorized_keys"))
    port = free_port()
    user = getpass.getuser()
    config = os.path.join(tmp, "sshd_config")
    with open(config, "w") as f:
        f.write(SSHD_CONFIG.format(tmp=tmp, port=port))
    client_config = os.path.join(tmp, "ssh_config")
    with open(client_config, "w") as f:
        f.write(SSH_CONFIG.format(tmp=tmp, port=port, user=user))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation dir
    daemon = Daemon("sshd", [which("sshd"), "-D", "-e", "-f", config], f"{tmp}/sshd.log")
    try:
        wait_for(lambda: daemon.check() and _ssh_banner(port), timeout,
                 f"sshd to answer on 127.0.0.1:{port}", daemon.tail)  # fmt: skip
        yield SSHServer(port, client_config, user, daemon)
    finally:
        daemon.stop()


def _ssh_banner(port):
    """Whether an SSH server answers on 127.0.0.1:``port`` (sends its ``SSH-2.0`` line)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False
