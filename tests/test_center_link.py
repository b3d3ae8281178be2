"""A worker's link to the center: registering again, with every key it holds, after the
center restarts or took it for dead."""
from distributed3 import Center
from distributed3.core.protocol import dumps_function
from distributed3.core.server import ConnectionPool
from distributed3.testing import cluster, gen_test
from distributed3.utils import wait_for


@gen_test(timeout=30)
async def test_worker_registers_again_with_its_keys_when_the_center_restarts():
    async with cluster(1, heartbeat_interval=0.05) as (center, [w]):
        pool = ConnectionPool()
        await pool(w.address).update_data(data={"kept": 42})
        host, port = center.address
        await center.close()
        new = await Center().start(host, port)  # the same address, fresh state
        try:
            await wait_for(lambda: w.address in new.ncores, 10, "worker did not come back")
            assert set(new.who_has["kept"]) == {w.address}
        finally:
            await new.close()
        await pool.close()


@gen_test(timeout=30)
async def test_worker_the_center_took_for_dead_registers_again_and_releases_waiters():
    """The center removed the worker (say, it was silent past the heartbeat timeout) but
    the connection lives on: the center's error reply makes the worker register again,
    with every key it holds, and a write waiting for its report is not left hanging."""
    async with cluster(1, heartbeat_interval=0.05) as (center, [w]):
        pool = ConnectionPool()
        await pool(w.address).update_data(data={"kept": 42})
        await pool(w.address).compute(key="reported", function=dumps_function(abs),
                                      args=(-1,), owner="client-1")  # fmt: skip
        await wait_for(lambda: center.owner.get("reported") == "client-1", 5, "not reported")
        center._remove_worker(w.address, "the test says it is silent")
        assert "kept" not in center.who_has
        reply = await pool(w.address).update_data(data={"new": 1})  # waits for its report
        assert reply["nbytes"]["new"] > 0
        # a result whose report is refused keeps its owner through the new registration
        await pool(w.address).compute(key="owned", function=dumps_function(abs), args=(-1,),
                                      owner="client-1")  # fmt: skip
        await wait_for(lambda: w.address in center.ncores, 10, "worker did not come back")
        await wait_for(lambda: center.owner.get("owned") == "client-1", 5, "owner lost")
        assert center.owner.get("reported") == "client-1"  # reported before, and again
        assert set(center.who_has["kept"]) == set(center.who_has["new"]) == {w.address}
        await pool.close()
