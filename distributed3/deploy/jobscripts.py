"""Job scripts for batch schedulers: Slurm, PBS Pro/OpenPBS, SGE and LSF.

A job runs one worker (an array job, several: one per element).  Its script is
:data:`TEMPLATE` filled in: the scheduler's directives (cores, memory, walltime,
queue, account, and whatever else is asked for), the lines to run before the worker
(``module load``, activating an environment), then ``dworker``, whose output goes to
the worker's own log file.  The secret is read from a file only its owner can read,
never written into the script: schedulers keep scripts where others may read them.

>>> print(SLURM.directives(cores=4, memory="16GB", walltime="01:00:00", queue="gpu",
...                        account=None, job_name="d3", log="/logs/d3-%j.out"))
#SBATCH -J d3
#SBATCH -p gpu
#SBATCH -n 1
#SBATCH --cpus-per-task=4
#SBATCH --mem=15G
#SBATCH -t 01:00:00
#SBATCH -o /logs/d3-%j.out
"""
import math
import shlex
from dataclasses import dataclass, field

from ..worker.store import parse_memory_limit

TEMPLATE = """\
#!/usr/bin/env bash
{directives}
{prologue}NAME="{prefix}$(( {first} + {index} ))"
exec >>"{log_directory}/$NAME.log" 2>&1
exec {python} -m distributed3.deploy.cli worker {center} --name "$NAME" \\
    --secret-file {secret_file} {worker_args}
"""


def memory_units(memory, unit="G", scale=2**30):
    """``"16GB"`` -> ``"16G"``: whole units, rounded up, as schedulers take them.

    >>> memory_units("1.5GB"), memory_units("500MB", "M", 2**20)
    ('2G', '477M')
    """
    return f"{math.ceil(parse_memory_limit(memory, 1) / scale)}{unit}"


@dataclass
class Engine:
    """One batch scheduler: its directive prefix, options and environment variables."""

    name: str
    prefix: str  # the directive lines' start
    options: dict  # what -> format of its directive, by what is asked for
    index: str  # shell expression of the array element's index, from 0
    submit: list  # the command that submits a script (read from stdin)
    array: str  # the submit option for an array of n elements ({last}: n - 1)
    cancel: list
    extra: list = field(default_factory=list)  # directives every job gets

    def directives(self, **asked):
        """The directive lines for what is ``asked`` (None: not asked)."""
        lines = [f"{self.prefix} {self.options['job_name'].format(**asked)}"]
        for what in ("queue", "account", "cores", "memory", "walltime", "log"):
            if asked.get(what) is not None and what in self.options:
                fmt = self.options[what]
                values = dict(asked, memory=self._memory(asked.get("memory")),
                              walltime=self._walltime(asked.get("walltime")))  # fmt: skip
                lines += [f"{self.prefix} {line}" for line in fmt.format(**values).split("\n")]
        lines += [f"{self.prefix} {line}" for line in [*self.extra, *asked.get("extra", ())]]
        return "\n".join(lines)

    def _memory(self, memory):
        if memory is None:
            return None
        if self.name == "lsf":
            return memory_units(memory, "M", 2**20)
        return memory_units(memory, "gb") if self.name == "pbs" else memory_units(memory)

    def _walltime(self, walltime):
        """LSF takes ``[HH:]MM``; the others ``[HH:]MM:SS`` as given."""
        if walltime is None or self.name != "lsf" or walltime.count(":") < 2:
            return walltime
        hours, minutes, seconds = walltime.split(":")
        return f"{hours}:{int(minutes) + (int(seconds) > 0):02d}"

    def array_option(self, n):
        """The submit options that make the job an array of ``n`` elements."""
        return shlex.split(self.array.format(last=n - 1, n=n)) if n > 1 else []


SLURM = Engine(
    "slurm", "#SBATCH",
    {"job_name": "-J {job_name}", "queue": "-p {queue}", "account": "-A {account}",
     "cores": "-n 1\n--cpus-per-task={cores}", "memory": "--mem={memory}",
     "walltime": "-t {walltime}", "log": "-o {log}"},
    index="${SLURM_ARRAY_TASK_ID:-0}", submit=["sbatch", "--parsable"],
    array="--array=0-{last}", cancel=["scancel"],
)  # fmt: skip
PBS = Engine(
    "pbs", "#PBS",
    {"job_name": "-N {job_name}", "queue": "-q {queue}", "account": "-A {account}",
     "cores": "-l select=1:ncpus={cores}", "memory": "-l mem={memory}",
     "walltime": "-l walltime={walltime}", "log": "-o {log}"},
    index="${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-0}}", submit=["qsub"], array="-J 0-{last}",
    cancel=["qdel"], extra=["-j oe"],
)  # fmt: skip
SGE = Engine(
    "sge", "#$",
    {"job_name": "-N {job_name}", "queue": "-q {queue}", "account": "-P {account}",
     "cores": "-pe smp {cores}", "memory": "-l h_vmem={memory}",
     "walltime": "-l h_rt={walltime}", "log": "-o {log}"},
    index="$(( ${SGE_TASK_ID/undefined/1} - 1 ))", submit=["qsub", "-terse"],
    array="-t 1-{n}", cancel=["qdel"], extra=["-j y", "-S /bin/bash"],
)  # fmt: skip
LSF = Engine(
    "lsf", "#BSUB",
    {"job_name": "-J {job_name}", "queue": "-q {queue}", "account": "-P {account}",
     "cores": '-n {cores}\n-R "span[hosts=1]"', "memory": "-M {memory}",
     "walltime": "-W {walltime}", "log": "-o {log}"},
    index="$(( ${LSB_JOBINDEX:-0} > 0 ? ${LSB_JOBINDEX:-0} - 1 : 0 ))", submit=["bsub"], array="",
    cancel=["bkill"],
)  # fmt: skip
ENGINES = {e.name: e for e in (SLURM, PBS, SGE, LSF)}


def render(engine, *, center, secret_file, prefix, first, python, log_directory,
           job_name, cores, memory=None, walltime=None, queue=None, account=None,
           extra_directives=(), prologue=(), worker_args=(), template=TEMPLATE):  # fmt: skip
    """The job script for workers ``{prefix}{first}``, ``{prefix}{first + 1}``, ... (one
    per array element; the element's index comes from the scheduler's environment)."""
    log = f"{log_directory}/{job_name}-{'%J' if engine.name == 'lsf' else '%j'}.out"
    if engine.name in ("pbs", "sge"):
        log = log_directory  # they name the file themselves, in that directory
    return template.format(
        directives=engine.directives(cores=cores, memory=memory, walltime=walltime,
                                     queue=queue, account=account, job_name=job_name,
                                     log=log, extra=extra_directives),  # fmt: skip
        prologue="".join(line + "\n" for line in prologue), prefix=prefix, first=first, index=engine.index,
        log_directory=shlex.quote(log_directory), python=shlex.quote(python),
        center=center, secret_file=shlex.quote(secret_file),
        worker_args=" ".join(shlex.quote(a) for a in worker_args),
    )
