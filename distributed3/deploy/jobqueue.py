"""Clusters whose workers are batch jobs: Slurm, PBS Pro/OpenPBS, SGE and LSF.

The center runs in a child of this process (on the submit host, where the scheduler's
commands work); each worker is a job, or an element of an array job when ``scale``
asks for several at once.  The job script (:mod:`.jobscripts`; print it with
``cluster.job_script()``) takes its cores, memory, walltime, queue, account and extra
directives from the constructor, and runs ``job_script_prologue`` before the worker.
Workers end with their center (``--death-timeout``); ``close()`` cancels every job.

>>> cluster = SLURMCluster(cores=4, memory="16GB", walltime="01:00:00",
...                        job_script_prologue=["module load python"])  # doctest: +SKIP
>>> print(cluster.job_script())                                         # doctest: +SKIP
>>> cluster.scale(10)                                                   # doctest: +SKIP
>>> pool = Pool(cluster)                                                # doctest: +SKIP

The secret goes to the jobs in a file only its owner can read, under
``~/.distributed3/secrets`` (a shared home, as on most clusters; ``secret_directory``
names another shared directory), removed on ``close()``.
"""
import getpass
import logging
import os
import re
import shlex
import subprocess
import sys
import weakref

from ..utils import format_address
from .cluster import Cluster
from .jobscripts import LSF, PBS, SGE, SLURM, TEMPLATE, render

logger = logging.getLogger(__name__)


class JobQueueCluster(Cluster):
    """Workers as jobs of the batch scheduler ``scheduler`` (see the subclasses)."""

    scheduler = SLURM

    def __init__(self, cores=1, memory=None, walltime=None, queue=None, account=None, *,
                 job_name=None, job_extra_directives=(), job_script_prologue=(),
                 worker_extra_args=(), python=sys.executable, template=TEMPLATE,
                 secret_directory=None, n_workers=0, **kwargs):  # fmt: skip
        self.engine = self.scheduler.name
        super().__init__(worker_cores=cores, **kwargs)
        self.memory, self.walltime, self.queue, self.account = memory, walltime, queue, account
        self.job_name = job_name or f"distributed3-{self.id}"
        self.job_extra_directives = list(job_extra_directives)
        self.job_script_prologue = list(job_script_prologue)
        self.worker_extra_args = list(worker_extra_args)
        self.python = python
        self.template = template
        self.secret_file = self._write_secret(secret_directory)
        # removed on close(), or when this process ends without it
        self._secret_finalizer = weakref.finalize(self, _remove, self.secret_file)
        try:
            self._start_center()
            self.status = "running"
            if n_workers:
                self.scale(n_workers)
        except BaseException:  # no center, no secret left behind
            self.close()
            raise

    def _write_secret(self, directory):
        directory = directory or os.path.join(os.path.expanduser("~"), ".distributed3",
                                              "secrets")  # fmt: skip
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{self.engine}-{self.id}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.secret)
        return path

    def worker_args(self, name):
        args = ["--ncores", str(self.worker_cores), "--nprocs", "1"]
        if self.death_timeout is not None:
            args += ["--death-timeout", str(self.death_timeout)]
        if self.memory is not None:
            args += ["--memory-limit", str(self.memory)]
        return args + self.worker_extra_args

    def job_script(self, first=0):
        """The script of the job that starts worker number ``first`` (and, as an array,
        the next ones)."""
        return render(
            self.scheduler, center=format_address(self.center_address),
            secret_file=self.secret_file, prefix=f"{self.engine}-{self.id}-", first=first,
            python=self.python, log_directory=self.log_directory, job_name=self.job_name,
            cores=self.worker_cores, memory=self.memory, walltime=self.walltime,
            queue=self.queue, account=self.account,
            extra_directives=self.job_extra_directives, prologue=self.job_script_prologue,
            worker_args=self.worker_args(None), template=self.template,
        )  # fmt: skip

    # -- the engine's commands ----------------------------------------------------------

    def _run(self, cmd, stdin=None):
        """Run one of the scheduler's commands; its output, or an error naming it."""
        try:
            done = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                                  timeout=self.timeout)  # fmt: skip
        except FileNotFoundError:
            raise RuntimeError(f"{cmd[0]} is not on this machine's PATH: run the cluster "
                               f"where {self.engine} jobs are submitted") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{shlex.join(cmd)} did not answer within {self.timeout} s") \
                from None
        if done.returncode:
            raise RuntimeError(f"{shlex.join(cmd)} failed with status {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def _launch(self, names):
        first = int(names[0].rsplit("-", 1)[1])
        cmd = self.scheduler.submit + self.scheduler.array_option(len(names))
        if self.scheduler is LSF and len(names) > 1:
            cmd += ["-J", f"{self.job_name}[1-{len(names)}]"]
        out = self._run(cmd, stdin=self.job_script(first))
        handles = element_ids(self.scheduler, out, len(names))
        logger.info("Submitted %s job %s for %d workers", self.engine, out.strip(), len(names))
        return dict(zip(names, handles))

    def _stop(self, names):
        handles = [self.launched[n] for n in names if n in self.launched]
        for cmd in cancel_commands(self.scheduler, handles):
            try:
                self._run(cmd)
            except RuntimeError as e:  # ended meanwhile: nothing left to cancel
                logger.info("%s", e)

    def _alive(self):
        out = self._run(list_command(self.scheduler, self.job_name))
        shown = listed(self.scheduler, out, self.launched.values())
        return {n for n, h in self.launched.items() if h in shown}

    def close(self):
        """Cancel every job, stop the center, remove the secret file.  Idempotent."""
        try:
            super().close()
        finally:
            self._secret_finalizer()


class SLURMCluster(JobQueueCluster):
    """Workers as Slurm jobs (``sbatch``; ``queue`` is the partition)."""

    scheduler = SLURM


class PBSCluster(JobQueueCluster):
    """Workers as PBS Pro / OpenPBS jobs (``qsub``; arrays with ``-J``, which Torque
    spells ``-t``: on Torque, give ``template=`` or scale one worker at a time)."""

    scheduler = PBS


class SGECluster(JobQueueCluster):
    """Workers as Sun/Son of/Univa Grid Engine jobs (``qsub``; ``account``: project)."""

    scheduler = SGE


class LSFCluster(JobQueueCluster):
    """Workers as IBM Spectrum LSF jobs (``bsub``; ``account``: project)."""

    scheduler = LSF


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def element_ids(engine, out, n):
    """The ids of the ``n`` workers of the job whose submission printed ``out``.

    >>> element_ids(SLURM, "4242\\n", 1), element_ids(SLURM, "4242;cl\\n", 2)
    (['4242'], ['4242_0', '4242_1'])
    >>> element_ids(PBS, "17[].pbs01\\n", 2), element_ids(SGE, "88.1-2:1\\n", 2)
    (['17[0].pbs01', '17[1].pbs01'], ['88.1', '88.2'])
    >>> element_ids(LSF, "Job <9> is submitted to queue <normal>.\\n", 2)
    ['9[1]', '9[2]']
    """
    out = out.strip()
    found = re.search(r"Job <(\d+)>" if engine is LSF else r"^\d+", out)
    if found is None:
        raise RuntimeError(f"{shlex.join(engine.submit)} printed no job id that this knows "
                           f"how to read: {out!r}; cancel that job by hand if it exists")
    if engine is LSF:
        job = found.group(1)
        return [f"{job}[{i + 1}]" for i in range(n)] if n > 1 else [job]
    if engine is PBS:
        job, _, server = out.partition(".")
        job = job.removesuffix("[]")
        suffix = f".{server}" if server else ""
        return [f"{job}[{i}]{suffix}" for i in range(n)] if n > 1 else [out]
    job = found.group(0)
    if engine is SGE:
        return [f"{job}.{i + 1}" for i in range(n)] if n > 1 else [job]
    return [f"{job}_{i}" for i in range(n)] if n > 1 else [job]


def cancel_commands(engine, handles):
    """The commands that cancel these jobs or array elements.

    >>> cancel_commands(SLURM, ["4_0", "5"]), cancel_commands(SGE, ["88.2"])
    ([['scancel', '4_0', '5']], [['qdel', '88', '-t', '2']])
    """
    if not handles:
        return []
    if engine is SGE:
        cmds = []
        for h in handles:
            job, _, task = h.partition(".")
            cmds.append(["qdel", job] + (["-t", task] if task else []))
        return cmds
    return [engine.cancel + list(handles)]


def list_command(engine, job_name):
    """The command that lists this user's jobs named ``job_name``, one id a line."""
    user = getpass.getuser()
    return {
        "slurm": ["squeue", "-h", "-r", "-u", user, "-n", job_name, "-o", "%i"],
        "pbs": ["qstat", "-t", "-u", user],
        "sge": ["qstat", "-u", user],
        "lsf": ["bjobs", "-noheader", "-o", "jobid jobindex", "-J", job_name],
    }[engine.name]


def parse_list(engine, out):
    """The job and element ids in a listing of :func:`list_command`.

    >>> sorted(parse_list(SLURM, "12_0\\n12_1\\n13\\n"))
    ['12_0', '12_1', '13']
    >>> sorted(parse_list(LSF, "9 1\\n9 2\\n10 0\\n"))
    ['10', '9[1]', '9[2]']
    >>> sorted(parse_list(SGE, "7 0.5 d3 me qw 01/01/2024 10:00:00 1 2-6:2\\n"))
    ['7.2', '7.4', '7.6']
    """
    ids = set()
    for line in out.splitlines():
        parts = line.split()
        if not parts or not parts[0][0].isdigit():
            continue  # a header
        if engine is LSF:
            ids.add(parts[0] if len(parts) < 2 or parts[1] == "0" else f"{parts[0]}[{parts[1]}]")
        elif engine is SGE:
            ids.update(_sge_ids(parts))
        else:
            ids.add(parts[0])
    return ids


def _sge_ids(parts):
    """The ids on one line of SGE's ``qstat``: ``job-ID prior name user state date time
    [queue@host] slots [ja-task-ID]``, the queue only while it runs, and a pending array's
    tasks as ranges (``2-4:1``, ``1,3``)."""
    running = len(parts) > 7 and "@" in parts[7]
    tasks = parts[9 if running else 8:]
    if not tasks:
        return [parts[0]]
    ids = []
    for piece in tasks[0].split(","):
        first, _, rest = piece.partition("-")
        last, _, step = rest.partition(":")
        ids += [f"{parts[0]}.{i}" for i in range(int(first), int(last or first) + 1,
                                                 int(step or 1))]  # fmt: skip
    return ids


def _job_key(engine, handle):
    """What a listing shows of a job or element id: PBS cuts the server's name short."""
    return handle.split(".", 1)[0] if engine is PBS else handle


def listed(engine, out, handles):
    """Which of ``handles`` (as :func:`element_ids` gave them) the listing ``out`` shows.

    >>> sorted(listed(PBS, "17[0].pbs0*  me  workq  d3  R\\n", ["17[0].pbs01.org", "17[1].pbs01.org"]))
    ['17[0].pbs01.org']
    """
    shown = {_job_key(engine, i) for i in parse_list(engine, out)}
    return {h for h in handles if _job_key(engine, h) in shown}
