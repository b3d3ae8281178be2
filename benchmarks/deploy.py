"""Clusters started through real engines: distributed3 beside dask, in one run.

Starts a one-node Slurm and an sshd on loopback (``tests/engines.py``, as root, with the
packages ``tests/system-packages.sh`` installs), then for each system on each engine:

* up: seconds from creating the cluster object to 4 workers registered;
* work: makespan of 16 tasks of 0.5 s on those 4 one-core workers, over the ideal (2 s);
* adapt: makespan of the same work from zero workers, the cluster adapting between 0 and
  4 (dask-jobqueue's and our ``adapt``) -- what a user waits when nothing runs before;
* down: seconds from ``close()`` until no job is in the queue / no process is left.

dask's side needs ``pip install dask-jobqueue asyncssh distributed``; a system that is not
installed is left out.  Run:  python benchmarks/deploy.py
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import engines  # noqa: E402

WORKERS, TASKS, SECONDS = 4, 16, 0.5
IDEAL = TASKS * SECONDS / WORKERS


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def wait(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        time.sleep(0.02)


def ours(make):
    """Figures for a distributed3 cluster made by ``make()``."""
    from distributed3 import Pool

    def up():
        cluster = make()
        cluster.scale(WORKERS)
        cluster.wait_for_workers(WORKERS, timeout=120)
        return cluster

    t_up, cluster = timed(up)
    with Pool(cluster) as pool:
        t_work, _ = timed(lambda: pool.gather(pool.map(time.sleep, [SECONDS] * TASKS,
                                                       chunksize=1)))  # fmt: skip
    cluster.scale(0)
    wait(lambda: not cluster.workers)
    cluster.adapt(minimum=0, maximum=WORKERS, interval=0.2, grace=5)
    with Pool(cluster) as pool:
        t_adapt, _ = timed(lambda: pool.gather(pool.map(time.sleep, [SECONDS] * TASKS,
                                                        chunksize=1)))  # fmt: skip
    t_down, _ = timed(lambda: (cluster.close(), wait(lambda: not cluster.workers)))
    return t_up, t_work, t_adapt, t_down


def theirs(make, gone, adaptive=True):
    """Figures for a dask cluster made by ``make()``; ``gone()``: its workers ended;
    ``adaptive``: whether it can start workers again (dask's SSHCluster cannot)."""
    from dask.distributed import Client

    def up():
        cluster = make()
        cluster.scale(WORKERS)
        client = Client(cluster)
        client.wait_for_workers(WORKERS, timeout=120)
        return cluster, client

    t_up, (cluster, client) = timed(up)
    t_work, _ = timed(lambda: client.gather(client.map(time.sleep, [SECONDS] * TASKS,
                                                       pure=False)))  # fmt: skip
    t_adapt = None
    if adaptive:
        cluster.scale(0)
        wait(lambda: not client.scheduler_info()["workers"])
        cluster.adapt(minimum=0, maximum=WORKERS, interval="200ms", wait_count=25)
        t_adapt, _ = timed(lambda: client.gather(client.map(time.sleep, [SECONDS] * TASKS,
                                                            pure=False)))  # fmt: skip
    client.close()
    t_down, _ = timed(lambda: (cluster.close(), wait(gone)))
    return t_up, t_work, t_adapt, t_down


def slurm_systems(slurm, tmp):
    os.environ.update(slurm.env)
    from distributed3 import SLURMCluster

    yield "distributed3", lambda: ours(lambda: SLURMCluster(
        cores=1, memory="400MB", host="127.0.0.1", log_directory=f"{tmp}/d3-logs",
        secret_directory=f"{tmp}/d3-secrets"))  # fmt: skip
    try:
        from dask_jobqueue import SLURMCluster as DaskSLURM
    except ImportError:
        return
    yield "dask-jobqueue", lambda: theirs(lambda: DaskSLURM(
        cores=1, processes=1, memory="400MB", walltime="00:30:00", python=sys.executable,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
        worker_extra_args=["--host", "127.0.0.1"], log_directory=f"{tmp}/dask-logs"),
        gone=lambda: not slurm.squeue())  # fmt: skip


def ssh_systems(sshd, tmp):
    from distributed3 import SSHCluster

    hosts = ["127.0.0.1"] * (WORKERS + 1)
    yield "distributed3", lambda: ours(lambda: SSHCluster(
        hosts, ssh_options=["-F", sshd.config], workers_per_host=0,
        log_directory=f"{tmp}/d3-ssh"))  # fmt: skip
    try:
        import asyncssh  # noqa: F401
        from dask.distributed import SSHCluster as DaskSSH
    except ImportError:
        return
    key = os.path.join(os.path.dirname(sshd.config), "user_key")
    connect = {"port": sshd.port, "client_keys": [key], "known_hosts": None,
               "username": sshd.user}  # fmt: skip
    yield "dask SSHCluster", lambda: theirs(lambda: DaskSSH(
        hosts, connect_options=connect, remote_python=sys.executable,
        worker_options={"nthreads": 1, "host": "127.0.0.1"},
        scheduler_options={"port": 0, "dashboard_address": None, "host": "127.0.0.1"}),
        gone=lambda: True, adaptive=False)  # fmt: skip


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with engines.slurm(f"{tmp}/slurm", cpus=8) as slurm:
            for name, run in slurm_systems(slurm, tmp):
                rows.append(("Slurm", name, *run()))
        with engines.sshd(f"{tmp}/sshd") as sshd:
            for name, run in ssh_systems(sshd, tmp):
                rows.append(("SSH", name, *run()))
    print(f"\n{WORKERS} one-core workers; work: {TASKS} tasks of {SECONDS} s "
          f"(ideal {IDEAL:.1f} s)\n")
    print(f"| engine | system | up (s) | work / ideal | adapt from 0 (s) | down (s) |")
    print("|---|---|---|---|---|---|")
    for engine, name, up, work, adapt, down in rows:
        a = f"{adapt:.2f}" if adapt is not None else "n/a"
        print(f"| {engine} | {name} | {up:.2f} | {work / IDEAL:.2f} | {a} | {down:.2f} |")


if __name__ == "__main__":
    main()
