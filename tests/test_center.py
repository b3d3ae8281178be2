"""Every center op, membership through connection lifetime, pushed events."""
import asyncio
import time

import pytest

from distributed3 import AuthenticationError, Center
from distributed3.core.comm import connect
from distributed3.core.server import rpc
from distributed3.core.protocol import dumps_function
from distributed3.testing import cluster, gen_test
from distributed3.utils import wait_for
from distributed3.versions import versions

ALICE, BOB = ("127.0.0.1", 9001), ("127.0.0.1", 9002)


async def call(comm, op, **kwargs):
    await comm.write({"op": op, **kwargs})
    reply = await comm.read()
    if reply["status"] != "OK":
        raise reply["exception"]
    return reply["result"]


@gen_test()
async def test_keys_and_queries():
    center = await Center().start(port=0)
    try:
        alice, bob = await connect(center.address), await connect(center.address)
        await call(alice, "register", address=ALICE, ncores=2, keys=["x"], nbytes={"x": 10},
                   name="alice")  # fmt: skip
        await call(bob, "register", address=BOB, ncores=1)
        await call(bob, "add_keys", address=BOB, keys=["x", "y"], nbytes={"y": 5})
        assert await call(alice, "who_has") == {"x": {ALICE, BOB}, "y": {BOB}}
        assert await call(alice, "who_has", keys=["y", "zzz"]) == {"y": {BOB}, "zzz": set()}
        assert await call(alice, "has_what") == {ALICE: {"x"}, BOB: {"x", "y"}}
        assert await call(alice, "has_what", workers=["127.0.0.1:9001"]) == {ALICE: {"x"}}
        assert await call(alice, "ncores") == {ALICE: 2, BOB: 1}
        assert await call(alice, "nbytes") == {"x": 10, "y": 5}
        assert await call(alice, "nbytes", keys=["y"]) == {"y": 5}
        workers = await call(alice, "workers")
        assert workers[ALICE] == {"ncores": 2, "name": "alice", "nkeys": 1, "nbytes": 10, "pid": None,
                                  "resources": {}}  # fmt: skip
        await call(bob, "remove_keys", address=BOB, keys=["x", "y"])
        assert await call(alice, "who_has") == {"x": {ALICE}}
        assert await call(alice, "nbytes") == {"x": 10}  # y has no holder: forgotten
        await call(bob, "heartbeat", address=BOB)
        await call(alice, "unregister", address=ALICE)
        assert await call(bob, "ncores") == {BOB: 1}
        assert await call(bob, "who_has") == {}
        alice.close(), bob.close()
    finally:
        await center.close()


@gen_test()
async def test_a_worker_speaks_only_for_itself():
    center = await Center().start(port=0)
    try:
        alice, mallory = await connect(center.address), await connect(center.address)
        await call(alice, "register", address=ALICE, ncores=1)
        for op, kwargs in [("unregister", {}), ("heartbeat", {}), ("add_keys", {"keys": ["k"]}),
                           ("remove_keys", {"keys": ["k"]})]:  # fmt: skip
            with pytest.raises(ValueError, match="may only speak for the worker it registered"):
                await call(mallory, op, address=ALICE, **kwargs)
        with pytest.raises(ValueError, match="announced 0 cores"):
            await call(mallory, "register", address=BOB, ncores=0)
        assert await call(mallory, "ncores") == {ALICE: 1}
        alice.close(), mallory.close()
    finally:
        await center.close()


@gen_test()
async def test_closing_the_registration_connection_removes_the_worker():
    center = await Center().start(port=0)
    try:
        alice = await connect(center.address)
        await call(alice, "register", address=ALICE, ncores=1, keys=["x"], nbytes={"x": 1})
        assert ALICE in center.ncores
        alice.close()
        await wait_for(lambda: ALICE not in center.ncores, 5, "worker still registered")
        assert "x" not in center.who_has and ALICE not in center.has_what
    finally:
        await center.close()


@gen_test()
async def test_registering_again_replaces_old_state():
    center = await Center().start(port=0)
    try:
        first = await connect(center.address)
        await call(first, "register", address=ALICE, ncores=1, keys=["old"])
        second = await connect(center.address)
        await call(second, "register", address=ALICE, ncores=3, keys=["new"])
        assert center.ncores == {ALICE: 3} and set(center.who_has) == {"new"}
        first.close()  # the stale connection closing does not remove the new registration
        await wait_for(lambda: len(center.comms) == 1, 5, "center did not see the close")
        await call(second, "heartbeat", address=ALICE)
        assert center.ncores == {ALICE: 3}
        second.close()
    finally:
        await center.close()


@gen_test()
async def test_subscribers_get_membership_events_in_order():
    center = await Center().start(port=0)
    try:
        alice = await connect(center.address)
        await call(alice, "register", address=ALICE, ncores=2, resources={"GPU": 1},
                   versions={"python": "3.11.7"})  # fmt: skip
        sub = await connect(center.address)
        assert await call(sub, "subscribe") == {
            "workers": {ALICE: 2}, "resources": {ALICE: {"GPU": 1}},
            "versions": {ALICE: {"python": "3.11.7"}}, "center_versions": versions()}
        dropped = await connect(center.address)
        await call(dropped, "subscribe")
        dropped.close()  # a subscriber that goes away does not disturb the others
        bob = await connect(center.address)
        await call(bob, "register", address=BOB, ncores=1)
        await call(alice, "unregister", address=ALICE)
        bob.close()
        events = [await asyncio.wait_for(sub.read(), 5) for _ in range(3)]
        assert events == [
            {"op": "add_worker", "address": BOB, "ncores": 1, "resources": {}, "versions": None},
            {"op": "remove_worker", "address": ALICE},
            {"op": "remove_worker", "address": BOB},
        ]
        await wait_for(lambda: len(center.subscribers) == 1, 5, "dropped subscriber kept")
        sub.close()
    finally:
        await center.close()


@gen_test()
async def test_secret_is_required_when_configured():
    center = await Center(secret="s").start(port=0)
    try:
        with pytest.raises(AuthenticationError):
            await connect(center.address)
        comm = await connect(center.address, secret="s")
        assert await call(comm, "ncores") == {}
        comm.close()
    finally:
        await center.close()


@gen_test()
async def test_wait_for_workers_times_out_with_a_message():
    center = await Center().start(port=0)
    try:
        with pytest.raises(TimeoutError, match="has 0 of 1 workers"):
            await center.wait_for_workers(1, timeout=0.1)
    finally:
        await center.close()


@gen_test()
async def test_key_released_before_its_worker_reported_it_is_dropped_when_reported():
    """A task's reply does not wait for the worker's report to the center, so a client
    may release a key the center has not heard of yet: the late report must not leak it."""
    async with cluster(1, heartbeat_interval=0.05) as (center, [w]):
        async with rpc(center.address) as c:
            await c.release_keys(keys=["early"])
        assert "early" in center.released
        async with rpc(w.address) as r:
            await r.update_data(data={"early": 1, "other": 2})
        await wait_for(lambda: "early" not in w.data, 5, "released key still on the worker")
        assert "early" not in center.who_has and set(center.who_has["other"]) == {w.address}
        async with rpc(w.address) as r:  # a second late copy goes the same way
            await r.update_data(data={"early": 3})
        await wait_for(lambda: "early" not in w.data, 5, "second late copy kept")


@gen_test()
async def test_owner_comes_with_the_workers_report_and_late_results_of_a_gone_client_go():
    async with cluster(1, heartbeat_interval=0.05, center_kwargs={"client_grace": 0.05}) as (
        center, [w]):  # fmt: skip
        comm = await connect(center.address)
        await comm.write({"op": "subscribe", "client": "c1"})
        await comm.read()
        async with rpc(w.address) as r:
            f = dumps_function(abs)
            await r.compute(key="mine", function=f, args=(-1,), owner="c1")
            await wait_for(lambda: center.owner.get("mine") == "c1", 5, "owner not reported")
            comm.close()  # the client goes; after the grace its keys are dropped
            await wait_for(lambda: "mine" not in w.data, 5, "key of a gone client kept")
            assert "c1" in center.gone
            # a result of that client's that reports only now is dropped too, however
            # long after (released keys are forgotten after a while, gone clients are not)
            center.release_keys(None, ["unrelated"])
            center.released.clear()
            await r.compute(key="late", function=f, args=(-2,), owner="c1")
            await wait_for(lambda: "late" not in w.data, 5, "late key of a gone client kept")
            assert "late" not in center.who_has and "late" not in center.owner


@gen_test()
async def test_copy_reported_after_its_key_was_released_is_dropped():
    """A copy made just before a release (replicate, a kept input, a hand-off) may report
    after it: the center must not keep it for nobody."""
    async with cluster(2, heartbeat_interval=0.05) as (center, [a, b]):
        async with rpc(a.address) as ra, rpc(b.address) as rb, rpc(center.address) as c:
            await ra.update_data(data={"k": 1})
            assert set(center.who_has["k"]) == {a.address}
            await c.release_keys(keys=["k"])
            await wait_for(lambda: "k" not in a.data, 5, "released key kept on its holder")
            await rb.update_data(data={"k": 1})  # the copy's report comes after the release
            await wait_for(lambda: "k" not in b.data, 5, "late copy of a released key kept")
            assert "k" not in center.who_has


@gen_test()
async def test_elements_of_a_chunk_resolve_through_it_and_go_with_it():
    """``G#i`` is element i of the chunk results kept under ``G``: held wherever ``G`` or
    a copy of the element is; released with ``G``, even when it reports late."""
    async with cluster(2, heartbeat_interval=0.05) as (center, [a, b]):
        comm = await connect(center.address)
        await call(comm, "subscribe", client="c1")
        async with rpc(a.address) as ra, rpc(b.address) as rb:
            f = dumps_function(abs)
            await ra.compute_chunk(group="G", function=f, args_list=[(-1,), (-2,)], owner="c1")
            await wait_for(lambda: "G" in center.who_has, 5, "chunk not reported")
            await rb.fetch_data(who_has={"G#1": [a.address]})  # a copy of one element
            assert b.data == {"G#1": 2}
            who = await call(comm, "who_has", keys=["G#0", "G#1"])
            assert who == {"G#0": {a.address}, "G#1": {a.address, b.address}}
            assert await call(comm, "who_has", keys=["G"], parts=True) == {
                "G": {a.address}, "G#1": {b.address}}  # fmt: skip
            await call(comm, "ownership", release=["G"])
            await wait_for(lambda: not a.data and not b.data, 5, "chunk or copy kept")
            # an element computed again before the release, reporting only now, goes too
            await rb.compute(key="G#0", function=f, args=(-1,), owner="c1")
            await wait_for(lambda: not b.data, 5, "late element of a released chunk kept")
            assert "G#0" not in center.owner and "G#0" not in center.owned["c1"]
        comm.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
@gen_test()
async def test_bytes_held_per_worker_follow_every_change(seed):
    """The center keeps each worker's bytes as keys come, go, change size and are
    released; after every step they equal the sum over what it holds."""
    import random

    rng = random.Random(seed)
    center = await Center().start(port=0)
    workers = [("127.0.0.1", 9101 + i) for i in range(3)]
    comms = {}
    try:
        for w in workers:
            comms[w] = await connect(center.address)
            await call(comms[w], "register", address=w, ncores=1)
        client = await connect(center.address)
        keys = [f"k{i}" for i in range(12)]
        for _ in range(150):
            w, some = rng.choice(workers), rng.sample(keys, rng.randint(1, 4))
            step = rng.choice(["add", "add", "remove", "release", "rejoin"])
            if step == "add":
                await call(comms[w], "add_keys", address=w, keys=some,
                           nbytes={k: rng.choice([10, 100, 1000]) for k in some})  # fmt: skip
            elif step == "remove":
                await call(comms[w], "remove_keys", address=w, keys=some)
            elif step == "release":
                await call(client, "release_keys", keys=some)
            else:  # the worker leaves and registers again with a few keys
                comms[w].close()
                await wait_for(lambda: w not in center.ncores, 5, "the worker stays")
                comms[w] = await connect(center.address)
                await call(comms[w], "register", address=w, ncores=1, keys=some,
                           nbytes={k: 7 for k in some})  # fmt: skip
            has_what, sizes = await call(client, "has_what"), await call(client, "nbytes")
            got = {w: info["nbytes"] for w, info in (await call(client, "workers")).items()}
            assert got == {w: sum(sizes.get(k, 0) for k in ks) for w, ks in has_what.items()}
    finally:
        await center.close()


def count_calls(fn):
    """How many Python and C function calls ``fn()`` makes: work, counted, not timed."""
    import sys

    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


@gen_test()
async def test_the_centers_work_per_message_does_not_grow_with_its_keys():
    """The same messages to a center holding 1,000 keys and to one holding 100,000 (on
    ten workers) cost the same number of calls."""

    def loaded(nkeys):
        center = Center()
        comms = [object() for _ in range(10)]
        for i, comm in enumerate(comms):
            address = ("127.0.0.1", 9200 + i)
            keys = [f"w{i}-{j}" for j in range(nkeys // 10)]
            center.register(comm, address, 1, keys, {k: 8 for k in keys})
        return center, comms

    def messages(center, comms):
        address, comm = ("127.0.0.1", 9200), comms[0]
        return [
            lambda: center.heartbeat(comm, address),
            lambda: center.add_keys(comm, address, ["new-1", "new-2"], {"new-1": 5, "new-2": 6}),
            lambda: center.remove_keys(comm, address, ["new-1"]),
            lambda: center.get_who_has(None, ["w0-1", "w3-2", "new-2"]),
            lambda: center.get_nbytes(None, ["w0-1", "new-2"]),
            lambda: center.get_workers(None),
            lambda: center.get_ncores(None),
        ]

    small, big = loaded(1_000), loaded(100_000)
    costs = [(count_calls(a), count_calls(b)) for a, b in zip(messages(*small), messages(*big))]
    assert all(a == b for a, b in costs), costs
    assert big[0].get_workers(None)[("127.0.0.1", 9200)]["nbytes"] == 10_000 * 8 + 6


@gen_test(timeout=60)
async def test_a_big_cluster_beats_less_often_and_the_reaper_allows_for_it():
    """400 workers are told to beat every 2 s, not every second: the center handles
    200 heartbeats a second at idle however many workers it has.  The reaper drops a
    worker silent for 3 of its intervals, not one silent for its plain timeout."""
    from distributed3.simulation import start_workers, stop_workers

    center = await Center(heartbeat_timeout=1.0).start(port=0)
    workers = await start_workers(center.address, 400)
    try:  # the first ones were told less at registering, and hear 2 s at their next beat
        await wait_for(lambda: set(center.beat_every.values()) == {2.0}, 10,
                       "not every worker was told to beat every 2 s")  # fmt: skip
        quiet, frozen = workers[0].address, workers[1].address

        def silent():  # as the center sees them, whatever heartbeats come meanwhile
            now = time.monotonic()
            center.last_seen[quiet] = now - 4  # past the timeout, within 3 intervals
            if frozen in center.last_seen:
                center.last_seen[frozen] = now - 7
            return frozen not in center.ncores

        await wait_for(silent, 5, "a worker silent for 3 of its intervals was kept")
        assert quiet in center.ncores
    finally:
        await stop_workers(workers)
        await center.close()
