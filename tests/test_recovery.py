"""Data whose every copy died with its worker: results computed again down a chain of
maps, scattered data sent again from the client's copy, or named when there is none."""
import gc
import os

import numpy as np
import pytest

from distributed3 import Pool, WorkerLostError
from distributed3.testing import BIN, Proc, process_cluster, run_in_cluster_loop
from distributed3.utils import wait_for_sync


@pytest.mark.slow
def test_lost_results_are_recomputed_through_a_chain():
    with process_cluster(nworkers=3) as (address, _, workers):
        with Pool(address) as pool:
            A = pool.map(lambda x: x + 1, range(30))
            B = pool.map(lambda a: a * 10, A)
            C = pool.map(lambda b: -b, B)
            holder = pool.worker_info()[next(iter(C[0].workers))]["pid"]
            next(w for w in workers if w.proc.pid == holder).kill()  # C[0], B[0], A[0] lived there
            assert pool.gather(C) == [-(x + 1) * 10 for x in range(30)]
            assert pool.apply(sum, [C]).get() == -4650


@pytest.mark.slow
def test_scattered_data_is_resent_or_named_when_lost():
    with process_cluster(nworkers=2) as (address, _, workers):
        with Pool(address) as pool:
            kept = np.arange(5)
            dropped = np.arange(3)
            handles = pool.scatter([kept, dropped])
            assert handles[0].workers != handles[1].workers
            lost_key = handles[1].key
            del dropped
            gc.collect()
            for w in workers:
                w.kill()
            with Proc([os.path.join(BIN, "dworker"), address, "--ncores", "1"]) as again:
                again.wait_for_line("Register with center")
                pool.wait_for_workers(1)
                assert list(handles[0].get()) == [0, 1, 2, 3, 4]  # sent again from our copy
                with pytest.raises(WorkerLostError, match=f"scattered data '{lost_key}'"):
                    handles[1].get()


def test_results_lost_with_a_worker_are_computed_again_where_their_inputs_live(pool, workers):
    A = pool.scatter([np.arange(1000), np.arange(2000)])  # one on each worker
    B = pool.map(lambda a: a * 10, A)  # too big to come back with the replies: on workers only
    C = pool.map(lambda b: b + 1, B)
    victim = next(w for w in workers if w.address in C[0].workers)  # it holds B[0], C[0] too
    survivor = next(w for w in workers if w is not victim)
    pool.replicate([A[0]], n=2)  # the input survives on the other worker; B[0] and C[0] not
    # a worker counts a task a moment after its reply left
    wait_for_sync(lambda: sum(w.tasks_done for w in workers) == 4, 5, "tasks not counted")
    done = survivor.tasks_done
    run_in_cluster_loop(victim.close(handoff=False))  # hands nothing over
    assert [int(c.sum()) for c in pool.gather(C)] == [10 * 999 * 1000 // 2 + 1000,
                                                      10 * 1999 * 2000 // 2 + 2000]  # fmt: skip
    wait_for_sync(lambda: survivor.tasks_done >= done + 2, 5, "nothing was computed again")
    assert survivor.tasks_done == done + 2  # B[0] again, then C[0] from it, nothing else
    assert pool.who_has(C)[C[0].key] == {survivor.address}
