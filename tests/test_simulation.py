"""Simulated workers are real protocol peers: they mix with real dworker processes."""
import sys

import pytest

from distributed3 import Pool
from distributed3.testing import Proc, process_cluster
from distributed3.utils import wait_for_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_simulated_and_real_workers_compute_right_answers_together():
    with process_cluster(nworkers=2) as (address, _, _):
        cmd = [sys.executable, "-m", "distributed3.simulation", address, "--workers", "50",
               "--service-time", "0.001"]  # fmt: skip
        with Proc(cmd) as sim, Pool(address) as pool:
            sim.wait_for_line(r"ready 50", 60)
            wait_for_sync(lambda: pool.nworkers == 52, 10, "52 workers")
            simulated = {w for w, i in pool.worker_info().items() if i["pid"] == sim.proc.pid}
            assert len(simulated) == 50
            # inputs on every worker, each task where its input is (tiny tasks from a
            # queue would stay on a few workers of either kind)
            squares = pool.map(lambda x: x * x, pool.scatter(range(400)), chunksize=1)
            assert pool.gather(squares) == [x * x for x in range(400)]
            ran_on = {w for h in squares for w in h.workers}
            assert ran_on & simulated and ran_on - simulated  # both kinds computed
            # one task reads all 400 results: fetched peer to peer across both kinds
            assert pool.apply(sum, [list(squares)]).get() == sum(x * x for x in range(400))
            assert sum(i["peer_bytes_in"] for i in pool.worker_info().values()) > 0
            sim.signal()  # SIGTERM: they leave, telling the center
            wait_for_sync(lambda: pool.nworkers == 2, 20, "the simulated workers to leave")
            assert pool.gather(pool.map(abs, [-1, -2])) == [1, 2]
