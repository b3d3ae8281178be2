"""The Session: the client's view of the cluster that batches, tasks and handles share."""
import asyncio

import pytest

from distributed3 import CommClosedError, ConnectionBrokenError, Worker
from distributed3.client.session import Session
from distributed3.core import ConnectionPool
from distributed3.testing import cluster, gen_test
from distributed3.utils import wait_for


async def started(center, **kwargs):
    session = Session(center.address, asynchronous=True, **kwargs)
    await session.start()
    return session


@gen_test()
async def test_it_learns_membership_and_tells_listeners_of_workers_that_join():
    async with cluster(1) as (center, workers):
        session = await started(center)
        try:
            assert session.cores == {workers[0].address: 1}
            joined = []

            class Listener:
                def add_worker(self, worker):
                    joined.append(worker)

            listener = Listener()
            session.listen(listener)
            late = await Worker(center.address, ncores=2, resources={"GPU": 1}).start(port=0)
            try:
                await session.wait_for_workers(2, timeout=5)
                assert session.cores[late.address] == 2
                assert session.resources[late.address] == {"GPU": 1}
                assert session.has_resources(late.address, {"GPU": 1})
                assert not session.has_resources(workers[0].address, {"GPU": 1})
                await wait_for(lambda: joined, 5, "the listener was not told")
                assert joined == [late.address]
                session.unlisten(listener)
            finally:
                await late.close()
            await wait_for(lambda: late.address not in session.cores, 5, "still listed")
        finally:
            await session.close()
        assert session.status == "closed"
        with pytest.raises(CommClosedError, match="not running"):
            session.check()


@gen_test()
async def test_keys_it_owns_are_released_at_the_center_when_dropped_or_closed():
    async with cluster(1) as (center, workers):
        session = await started(center)
        try:
            a, b = session.new_key("data"), session.new_key("data")
            assert a != b and a.startswith(f"data-{session.id}-")
            await session.own([a, b])
            await wait_for(lambda: center.owner.get(a) == session.id, 5, "not owned")
            session.release([a])
            await wait_for(lambda: a in center.released and a not in center.owner, 5,
                           "not released")  # fmt: skip
            assert center.owner.get(b) == session.id
        finally:
            await session.close()  # releases what it still owns
        await wait_for(lambda: b not in center.owner, 5, "close did not release b")


@gen_test()
async def test_releases_dropped_from_any_thread_go_out_together():
    async with cluster(1) as (center, _):
        session = await started(center)
        try:
            keys = [session.new_key("x") for _ in range(50)]
            await session.own(keys)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: [session.release_soon(k) for k in keys])
            await wait_for(lambda: all(k in center.released for k in keys), 5, "not released")
            assert center.counters["ownership"] <= 3  # a message for many, not one each
        finally:
            await session.close()


@gen_test()
async def test_reserved_resources_wait_for_each_other():
    session = Session(("127.0.0.1", 1), asynchronous=True)
    session.resources = {"w": {"GPU": 1}}
    await session.reserve("w", {"GPU": 1})
    second = asyncio.ensure_future(session.reserve("w", {"GPU": 1}))
    await asyncio.sleep(0)  # it runs up to its wait, which nothing has ended yet
    assert not second.done()
    session.give_back("w", {"GPU": 1})
    await asyncio.wait_for(second, 5)
    session.give_back("w", {"GPU": 1})


@gen_test()
async def test_calls_to_an_unreachable_center_fail_naming_it_after_its_timeout():
    async with cluster(0) as (center, _):
        address = center.address
    session = Session(address, asynchronous=True, timeout=0.3)  # nothing listens there now
    session.connections = ConnectionPool()
    try:
        with pytest.raises(ConnectionBrokenError, match=r"unreachable for 0.3 s"):
            await session.center("ncores")
    finally:
        await session.connections.close()


@gen_test()
async def test_a_disconnected_session_is_seen_as_gone_by_the_center():
    async with cluster(1, center_kwargs={"client_grace": 0.05}) as (center, _):
        session = await started(center)
        try:
            key = session.new_key("x")
            await session.own([key])
            await wait_for(lambda: key in center.owner, 5, "not owned")
            session.disconnect()
            await wait_for(session.center_link_down, 5, "still linked")
            await wait_for(lambda: key not in center.owner, 5, "the center kept its keys")
        finally:
            await session.close()


def _closed_while_running(pool, call):
    """The error ``call()`` raised in another thread when this one closed ``pool`` while
    it ran; it must end within 10 s of the close."""
    import threading

    from distributed3.utils import wait_for_sync

    outcome = {}

    def caller():
        try:
            call()
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    wait_for_sync(lambda: pool.session.unfinished(), 10, "the call never started")
    pool.close()
    thread.join(10)
    assert not thread.is_alive(), "the call still waits after the pool closed"
    return outcome.get("error")


@pytest.mark.parametrize("call", ["map", "imap", "apply"])
def test_closing_the_pool_fails_a_call_blocked_in_another_thread(center, gate, call):
    """A call waiting for its tasks when another thread closes the pool raises why, at
    once; it used to retry the closed connections for good."""
    from distributed3 import Pool
    from distributed3.testing import held

    pool = Pool(center.address)
    calls = {"map": lambda: pool.map(held, range(4)),
             "imap": lambda: list(pool.imap(held, range(4))),
             "apply": lambda: pool.apply(held, (1,)).get()}  # fmt: skip
    error = _closed_while_running(pool, calls[call])
    assert isinstance(error, CommClosedError), error
    assert "closed before the call ended" in str(error)


@gen_test()
async def test_aclose_during_amap_fails_the_amap():
    from distributed3 import Pool
    from distributed3.testing import GATE, held

    GATE.clear()
    try:
        async with cluster(2) as (center, _):
            pool = await Pool(center.address, asynchronous=True)
            job = asyncio.ensure_future(pool.amap(held, range(4)))
            await wait_for(lambda: pool.session.unfinished(), 10, "the map never started")
            await pool.aclose()
            with pytest.raises(CommClosedError, match="closed before the call ended"):
                await asyncio.wait_for(job, 10)
    finally:
        GATE.set()


CALLS_AFTER_CLOSE = {
    "scatter": lambda pool, d: pool.scatter([1]),
    "gather": lambda pool, d: pool.gather([d]),
    "get": lambda pool, d: d.get(),
    "map": lambda pool, d: pool.map(abs, [1]),
    "submit": lambda pool, d: pool.submit(abs, 1),
    "who_has": lambda pool, d: pool.who_has([d]),
    "has_what": lambda pool, d: pool.has_what(),
    "replicate": lambda pool, d: pool.replicate([d], n=1),
    "delete": lambda pool, d: pool.delete([d]),
    "worker_info": lambda pool, d: pool.worker_info(),
}


@pytest.mark.parametrize("call", sorted(CALLS_AFTER_CLOSE))
def test_every_call_after_close_says_the_pool_is_closed(center, call):
    """Not 'could not put 1 value on any worker' (scatter), nor an empty answer
    (worker_info) or none at all (replicate)."""
    from distributed3 import Pool

    pool = Pool(center.address)
    (d,) = pool.scatter([b"x" * 10_000])  # not in any reply: getting it needs a worker
    pool.close()
    with pytest.raises(CommClosedError, match="is not running"):
        CALLS_AFTER_CLOSE[call](pool, d)


def test_closing_the_pool_fails_a_call_waiting_for_a_worker_to_join(two_workers):
    """With no worker left, a call waits for one to join -- for good where the pool
    belongs to a deployed cluster (``worker_wait`` infinite); closing the pool must
    end that wait too."""
    import math

    from distributed3 import Pool
    from distributed3.testing import run_in_cluster_loop
    from distributed3.utils import wait_for_sync

    center, workers = two_workers
    pool = Pool(center.address)
    pool.session.worker_wait = math.inf  # as Pool(cluster) sets it
    for w in workers:
        run_in_cluster_loop(w.close())
    wait_for_sync(lambda: not pool.session.cores, 10, "the workers are still listed")
    error = _closed_while_running(pool, lambda: pool.map(abs, [-1, -2]))
    assert isinstance(error, CommClosedError), error
