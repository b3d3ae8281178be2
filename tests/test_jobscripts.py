"""Job scripts of PBS, SGE and LSF (no scheduler runs here): what they ask the scheduler
for, and -- run by bash as the scheduler would, with its array variables set -- that they
start real workers that join the cluster under the right names."""
import os
import signal
import subprocess

import pytest

from distributed3.deploy.jobqueue import (LSFCluster, PBSCluster, SGECluster, SLURMCluster,
                                          cancel_commands, element_ids, list_command,
                                          listed)  # fmt: skip
from distributed3.utils import wait_for_sync

pytestmark = pytest.mark.timeout(60)

ASK = dict(cores=2, memory="4GB", walltime="01:30:00", queue="short", account="proj42",
           job_extra_directives=["EXTRA"], job_script_prologue=["export FROM_PROLOGUE=1"],
           host="127.0.0.1")  # fmt: skip

DIRECTIVES = {
    SLURMCluster: ["#SBATCH -p short", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=2",
                   "#SBATCH --mem=4G", "#SBATCH -t 01:30:00", "#SBATCH EXTRA"],
    PBSCluster: ["#PBS -q short", "#PBS -A proj42", "#PBS -l select=1:ncpus=2",
                 "#PBS -l mem=4gb", "#PBS -l walltime=01:30:00", "#PBS EXTRA"],
    SGECluster: ["#$ -q short", "#$ -P proj42", "#$ -pe smp 2", "#$ -l h_vmem=4G",
                 "#$ -l h_rt=01:30:00", "#$ EXTRA"],
    LSFCluster: ["#BSUB -q short", "#BSUB -P proj42", "#BSUB -n 2", "#BSUB -M 3815M",
                 "#BSUB -W 01:30", "#BSUB EXTRA"],
}  # fmt: skip
# what each scheduler sets in an array job's element, and the index (from 0) it means
ARRAY_ENV = {SLURMCluster: ({"SLURM_ARRAY_TASK_ID": "1"}, 1),
             PBSCluster: ({"PBS_ARRAY_INDEX": "1"}, 1),
             SGECluster: ({"SGE_TASK_ID": "2"}, 1), LSFCluster: ({"LSB_JOBINDEX": "2"}, 1)}
SINGLE_ENV = {SLURMCluster: {}, PBSCluster: {}, SGECluster: {"SGE_TASK_ID": "undefined"},
              LSFCluster: {"LSB_JOBINDEX": "0"}}  # fmt: skip


@pytest.fixture(params=list(DIRECTIVES), ids=lambda c: c.__name__)
def cluster(request, tmp_path):
    c = request.param(log_directory=str(tmp_path / "logs"),
                      secret_directory=str(tmp_path / "secrets"), **ASK)  # fmt: skip
    yield c
    c.close()
    assert not os.path.exists(c.secret_file)  # the secret does not outlive the cluster


def test_the_script_asks_for_what_was_given(cluster):
    script = cluster.job_script()
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in DIRECTIVES[type(cluster)]:
        assert directive in lines
    directives_end = max(i for i, line in enumerate(lines) if line.startswith("#") and i)
    assert lines.index("export FROM_PROLOGUE=1") > directives_end  # prologue after them
    assert cluster.secret.decode() not in script  # only the file's path
    assert oct(os.stat(cluster.secret_file).st_mode & 0o777) == "0o600"
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.slow
def test_the_script_starts_a_worker_named_by_its_array_element(cluster, tmp_path):
    path = tmp_path / "job.sh"
    path.write_text(cluster.job_script(first=5))
    prefix = f"{cluster.engine}-{cluster.id}-"
    env_array, index = ARRAY_ENV[type(cluster)]
    jobs = [subprocess.Popen(["bash", str(path)], env={**os.environ, **env},
                             start_new_session=True)  # fmt: skip
            for env in (SINGLE_ENV[type(cluster)], env_array)]
    try:
        expected = {f"{prefix}5", f"{prefix}{5 + index}"}

        def names():
            return {i["name"] for i in cluster.call_center("workers").values()}

        wait_for_sync(lambda: names() == expected, 30, f"workers {names()} != {expected}")
        cores = {i["ncores"] for i in cluster.call_center("workers").values()}
        assert cores == {2}
        log = (tmp_path / "logs" / f"{prefix}5.log").read_text()
        assert "Register with center" in log  # the worker's output went to its own log
    finally:
        for job in jobs:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(20)


def test_submission_output_cancel_and_listing():
    assert element_ids(SLURMCluster.scheduler, "77\n", 1) == ["77"]
    assert element_ids(SLURMCluster.scheduler, "77\n", 3) == ["77_0", "77_1", "77_2"]
    assert cancel_commands(LSFCluster.scheduler, ["9[1]"]) == [["bkill", "9[1]"]]
    assert cancel_commands(PBSCluster.scheduler, []) == []
    assert list_command(SLURMCluster.scheduler, "d3")[:1] == ["squeue"]


# ``qstat -u`` as SGE prints it: a running job (queue and slots, no task id), a running
# array task, a pending array's tasks on one line as a range, a pending plain job
SGE_QSTAT = """\
job-ID  prior   name       user  state submit/start at     queue          slots ja-task-ID
-----------------------------------------------------------------------------------------
     88 0.55500 distribute root  r     01/01/2024 10:00:00 all.q@node1        1
     89 0.55500 distribute root  r     01/01/2024 10:00:00 all.q@node1        1 1
     89 0.00000 distribute root  qw    01/01/2024 10:00:00                    1 2-4:1
     90 0.00000 distribute root  qw    01/01/2024 10:00:00                    1
     91 0.00000 distribute root  qw    01/01/2024 10:00:00                    1 1,3
"""
# ``qstat -t -u`` as PBS Pro prints it: the server's name cut short, a starred id
PBS_QSTAT = """\
pbs01:
                                                 Req'd  Req'd   Elap
Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time
--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----
17[].pbs01      root     workq    distribu       --   1   1    --    --  B   --
17[0].pbs01     root     workq    distribu     1234   1   1    --    --  R 00:00
17[1].pbs01     root     workq    distribu       --   1   1    --    --  Q   --
1234567.pbs01.e root     workq    distribu     1235   1   1    --    --  R 00:00
"""


def test_listing_finds_every_live_job_of_sge_and_pbs():
    """A job the listing misses counts as ended: scale() would submit it again."""
    sge = ["88", "89.1", "89.2", "89.3", "89.4", "90", "91.1", "91.3"]
    assert listed(SGECluster.scheduler, SGE_QSTAT, sge + ["91.2", "92"]) == set(sge)
    # handles as qsub printed them, with the server's full name
    pbs = ["17[0].pbs01.example.org", "17[1].pbs01.example.org", "1234567.pbs01.example.org"]
    assert listed(PBSCluster.scheduler, PBS_QSTAT, pbs + ["18.pbs01"]) == set(pbs)


def test_a_cluster_whose_first_submission_fails_leaves_no_secret_or_center(tmp_path,
                                                                          monkeypatch):
    import psutil

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    secrets = tmp_path / "secrets"
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(RuntimeError, match="is not on this machine.s PATH"):
        SLURMCluster(n_workers=2, host="127.0.0.1", secret_directory=str(secrets),
                     log_directory=str(tmp_path / "logs"))  # fmt: skip
    assert os.listdir(secrets) == []
    wait_for_sync(lambda: {p.pid for p in psutil.Process().children()} <= before, 10,
                  "the center still runs")  # fmt: skip
