"""Stateful workers: set-up once per worker, updates in order, late joiners, deaths."""
import os
import threading

import pytest

from distributed3 import Pool, Worker, WorkerInterface
from distributed3.testing import cluster_in_thread, process_cluster, run_in_cluster_loop
from distributed3.utils import wait_for_sync

INITS = []  # in-process workers share this module: one entry per __init__
LOCK = threading.Lock()


class Counter(WorkerInterface):
    def __init__(self, start, step=1):
        with LOCK:
            INITS.append(start)
        self.value, self.step, self.updates = start, step, []

    def run(self, x, extra=0):
        return self.value + self.step * x + extra

    def handle_update(self, *args, **kwargs):
        self.updates.append((args, kwargs))
        self.step = kwargs.get("step", self.step)


def test_init_once_per_worker_updates_in_order_and_late_joiners(pool, center, workers):
    INITS.clear()
    with pool.stateful(Counter, 100, step=2) as sp:
        out = sp.map(range(20))
        assert pool.gather(out) == [100 + 2 * x for x in range(20)]
        assert INITS == [100, 100]  # two workers, two set-ups, not twenty
        sp.update_workers(1, step=10)
        sp.update_workers(2, step=3)
        assert sorted(sp.imap_unordered([{"args": [1]}, {"args": [2], "kwargs": {"extra": 5}}])) == [
            103, 111
        ]  # fmt: skip
        late = run_in_cluster_loop(Worker(center.address, ncores=1).start(port=0))
        try:
            pool.wait_for_workers(3)
            wait_for_sync(lambda: pool.nworkers == 3, 5, "late worker not seen")
            assert pool.gather(sp.map(range(30))) == [100 + 3 * x for x in range(30)]
            assert len(INITS) == 3
            wait_for_sync(lambda: late.tasks_done > 0, 5, "the late worker ran no task")
            instance = late.stateful[sp.name]
            assert instance.updates == [((1,), {"step": 10}), ((2,), {"step": 3})]
        finally:
            run_in_cluster_loop(late.close())
    assert not any(w.stateful for w in workers)  # closed with the stateful pool


def test_stateful_tasks_survive_a_worker_death():
    with process_cluster(nworkers=2) as (address, _, procs):
        with Pool(address) as pool:

            class Pid(WorkerInterface):
                def __init__(self):
                    self.pid = os.getpid()

                def run(self, x):
                    return self.pid, x

            with pool.stateful(Pid) as sp:
                first = pool.gather(sp.map(range(10)))
                assert len({pid for pid, _ in first}) == 2
                procs[0].kill()
                wait_for_sync(lambda: pool.nworkers == 1, 10, "pool still sees the dead worker")
                again = pool.gather(sp.map(range(10)))
                assert [x for _, x in again] == list(range(10))
                assert {pid for pid, _ in again} == {procs[1].proc.pid}


def test_run_errors_come_back_per_item():
    class Picky(WorkerInterface):
        def run(self, x):
            if x < 0:
                raise ValueError(f"negative: {x}")
            return x

    with cluster_in_thread(1) as (center, _):
        with Pool(center.address) as pool, pool.stateful(Picky) as sp:
            out = sp.map([1, -1, 2])
            assert [o.status for o in out] == ["finished", "error", "finished"]
            with pytest.raises(ValueError, match="negative: -1"):
                out[1].get()


def test_a_worker_back_on_the_same_address_gets_its_instance_made_again(pool, center, workers):
    """A nanny restarts a worker on its fixed port: the pool must make the instance in
    the new process (it kept asking for one the old process had, for good); a worker
    seen anew that still has it (after a center restart) keeps it."""
    INITS.clear()
    with pool.stateful(Counter, 0) as sp:
        assert sorted(pool.gather(sp.map(range(4)))) == [0, 1, 2, 3]
        sp.update_workers(step=10)
        gone = workers[0]
        address = gone.address
        run_in_cluster_loop(gone.close())
        wait_for_sync(lambda: address not in pool.available_cores, 10, "the worker is still listed")
        back = run_in_cluster_loop(Worker(center.address, ncores=1).start(port=address[1]))
        try:
            wait_for_sync(lambda: address in pool.available_cores, 10, "it did not come back")
            assert pool.gather(sp.map(range(20))) == [10 * x for x in range(20)]
            wait_for_sync(lambda: back.tasks_done > 0, 5, "the worker back ran no task")
            assert back.stateful[sp.name].updates == [((), {"step": 10})]
            inits = len(INITS)
            pool.session._joined(workers[1].address)  # seen anew, as after a center restart
            assert pool.gather(sp.map(range(20))) == [10 * x for x in range(20)]
            assert len(INITS) == inits  # kept, not made again
        finally:
            run_in_cluster_loop(back.close())


@pytest.mark.timeout(30)
def test_a_closed_stateful_pool_refuses_calls_rather_than_make_its_instances_again(pool):
    INITS.clear()
    with pool.stateful(Counter, 100) as sp:
        assert pool.gather(sp.map([1, 2])) == [101, 102]
    made = len(INITS)
    for call in (lambda: sp.map([3]), lambda: list(sp.imap([3])),
                 lambda: list(sp.imap_unordered([3])), lambda: sp.update_workers(step=2)):
        with pytest.raises(ValueError, match="is closed"):
            call()
    sp.close()  # again: nothing
    assert len(INITS) == made
    assert "closed" in repr(sp)
