"""A chunk's elements that it has not started go to a free core (client/sharing.py,
worker/split.py): the long elements of a default-chunked map do not run in a row on
one worker while another idles, and the results of a chunk split that way behave as
any others (values, seeds, maps over them, release)."""
import asyncio
import random
import threading
import time

import pytest

from distributed3 import Pool
from distributed3.testing import both_waiting, process_cluster, released
from distributed3.utils import wait_for_sync
from distributed3.worker.execute import run_chunk
from distributed3.worker.runner import TaskRunner
from distributed3.worker.split import Share

pytestmark = pytest.mark.timeout(60)

# 308 elements on two cores go in default chunks of 19 or 20: the last, 289 to 307,
# holds all eight that wait
LENGTHS = [0] * 300 + [1] * 8


def waiter(go):
    """A task whose elements of 1 wait for the file ``go``; the others end at once.
    Made here, it travels by value, to worker processes too."""
    return lambda x: released(go, x, mark=True) if x == 1 else x


def both_busy(go, call):
    """Run ``call`` (a map whose waiting elements all start in one chunk) until two
    elements wait at once, on the two one-core workers: the chunk was split.  Then let
    them end, and return the map's results."""
    return both_waiting(go, call, "the elements the chunk had not started did not go to "
                                  "the idle worker")  # fmt: skip


@pytest.fixture
def go(tmp_path):
    return str(tmp_path / "go")


def ran_on(handles):
    return {next(iter(h.workers)) for h in handles}


def test_the_long_elements_of_one_chunk_are_shared_with_an_idle_worker(pool, workers, go):
    out = both_busy(go, lambda: pool.map(waiter(go), LENGTHS))
    assert pool.gather(out) == LENGTHS
    assert ran_on(out[300:]) == {w.address for w in workers}


def test_a_split_chunk_keeps_each_elements_seed(go):
    """Worker processes: in-process workers share the seed lock, which a waiting
    seeded element holds."""
    wait = waiter(go)
    draw = lambda x: (wait(x), random.random())  # noqa: E731
    with process_cluster(2) as (address, _, _):
        with Pool(address) as pool:
            out = both_busy(go, lambda: pool.map(draw, LENGTHS, seed=7))
            one_by_one = pool.map(draw, LENGTHS, seed=7, chunksize=1)  # never split
            assert pool.gather(out) == pool.gather(one_by_one)
            assert len(ran_on(out[300:])) == 2


def test_the_results_of_a_split_chunk_are_found_mapped_over_and_released(pool, workers, go):
    out = both_busy(go, lambda: pool.map(waiter(go), LENGTHS))
    where = pool.who_has(out[300:])
    assert all(where[h.key] == set(h.workers) for h in out[300:])
    assert pool.gather(pool.map(lambda x: x + 1, out)) == [x + 1 for x in LENGTHS]
    last = out.spans[-1].key  # the split chunk: its key, and its elements' own keys

    def held():
        return [k for w in workers for k in list(w.data) if k.split("#")[0] == last]

    assert last in held() and len(held()) >= 2  # the chunk, and the elements apart
    del out
    wait_for_sync(lambda: not held(), 10, "the split chunk's results were not released")


def test_a_map_over_a_maps_results_shares_its_chunks_too(pool, go):
    ones = pool.map(abs, LENGTHS)  # the map over it goes chunk for chunk, where they are
    out = both_busy(go, lambda: pool.map(waiter(go), ones))
    assert pool.gather(out) == LENGTHS


def test_a_chunk_of_tasks_with_inputs_shares_with_a_worker_that_can_fetch_them(pool, workers,
                                                                               go):  # fmt: skip
    data = pool.scatter([1] * 8)
    holder = workers[0].address
    on_holder = [d for d in data if d.workers == {holder}]  # small: the other may fetch
    out = both_busy(go, lambda: pool.map(waiter(go), on_holder, chunksize=4))
    assert pool.gather(out) == [1] * len(on_holder)
    assert ran_on(out) == {w.address for w in workers}


class _Answers:
    """Where a runner's replies go, in these tests: kept."""

    def prepare(self, msg):
        return msg

    def send_prepared(self, msg, loop, now=False):
        self.reply = msg


def stopped_chunk(stop, keys="g", budget=None):
    """Run a chunk of nine elements on a one-core runner; element 0 runs until
    ``stop(runner, comm)`` has been called.  ``(what stop returned, the runner's
    active tasks right after, the values kept, the elements called, the reply)``."""
    started, go, calls = threading.Event(), threading.Event(), []

    def element(x):
        calls.append(x)
        if x == 0:
            started.set()
            assert go.wait(10)
        return x * 10

    async def run():
        stored = []
        runner = TaskRunner(1, lambda *kept: stored.append(kept))
        comm = _Answers()
        runner.launch(comm, keys, element, list(range(9)), False, None, None, None, False,
                      budget)  # fmt: skip
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        stopped = stop(runner, comm)
        active = runner.active
        go.set()
        while not stored:
            await asyncio.sleep(0.005)
        runner.close()
        assert runner.active == 0
        return stopped, active, stored[0][1], calls, comm.reply["result"]

    return asyncio.run(run())


def test_a_worker_stops_a_running_chunk_exactly_where_the_split_says():
    """Element 0 runs until an event; the split keeps elements 1 to 4 and gives 5 to 8
    away: the chunk's reply has the first five, each run once."""

    def split(runner, comm):
        assert runner.split("elsewhere") == -1  # not here (yet): the pool asks later
        return runner.split("g")

    stop, active, values, calls, reply = stopped_chunk(split)
    assert stop == 5 and active == 5  # those given away no longer count
    assert values == [0, 10, 20, 30, 40] and calls == [0, 1, 2, 3, 4]
    assert reply["ran"] == 5


@pytest.mark.parametrize("how", ["keys", "connection"])
def test_a_cancel_stops_a_running_chunk_after_the_element_it_runs(how):
    """Its client stopped waiting (interrupted, or gone): the chunk starts no element
    past the one it runs -- not the whole chunk behind the next call."""

    def cancel(runner, comm):
        if how == "keys":
            return runner.cancel(keys=["g"])
        return runner.cancel(connection=comm)

    dropped, active, values, calls, reply = stopped_chunk(cancel)
    assert dropped == 0 and active == 1  # none queued; eight given up
    assert values == [0] and calls == [0] and reply["ran"] == 1


def test_a_given_back_chunk_runs_on():
    """Tasks given back go to another core; a chunk already running is not one of
    them (the pool splits it if it wants)."""
    _, active, values, calls, reply = stopped_chunk(
        lambda runner, comm: runner.cancel(keys=["g"], give_back=True))
    assert active == 9 and calls == list(range(9)) and "ran" not in reply


def test_a_chunk_with_a_budget_starts_no_element_once_past_it():
    """Element 0 runs past the chunk's budget: the chunk ends with it, and its reply
    says one ran (the pool sends the rest elsewhere, see client/bundle.py)."""
    _, active, values, calls, reply = stopped_chunk(
        lambda runner, comm: time.sleep(0.02), keys=[f"k{i}" for i in range(9)],
        budget=0.01)  # fmt: skip
    assert active == 9 and values == [0] and calls == [0] and reply["ran"] == 1


def test_the_center_says_only_their_own_holders_have_the_elements_split_off(
        pool, workers, center, go):  # fmt: skip
    """The chunk's worker holds the elements it ran under the chunk's key, not those
    split off: once their own reports are in, it is not named as holding them."""
    out = both_busy(go, lambda: pool.map(waiter(go), LENGTHS))
    group = out.spans[-1]
    apart = [group.handle(i) for i in sorted(group.apart)]
    wait_for_sync(lambda: all(h.key in center.who_has for h in apart), 10,
                  "the workers did not report the elements split off")
    where = pool.who_has(apart)
    assert all(where[h.key] == set(h.workers) for h in apart), (where, group.workers)


def test_elements_split_off_are_made_again_when_their_worker_dies(go):
    """The chunk's worker never held them: a map over them, once their own worker is
    killed, computes them again rather than looking for them there."""
    with process_cluster(2) as (address, _, procs):
        with Pool(address) as pool:
            out = both_busy(go, lambda: pool.map(waiter(go), LENGTHS))
            group = out.spans[-1]
            apart = [group.handle(i) for i in sorted(group.apart)]
            lost = [h for h in apart if not h.workers & group.workers]
            assert lost, "every element split off went back to the chunk's worker"
            pid = pool.worker_info()[next(iter(lost[0].workers))]["pid"]
            next(p for p in procs if p.proc.pid == pid).kill()
            assert pool.gather(pool.map(lambda x: x + 1, lost)) == [2] * len(lost)
            assert pool.gather(out) == LENGTHS


def test_a_split_task_keeps_the_inputs_of_its_own_elements_only():
    """The tail of a chunk split off does not fetch the inputs of the elements its
    chunk ran, nor is it placed by them (nor the head by the tail's)."""
    from distributed3.client.handles import RemoteData
    from distributed3.client.results import Handles
    from distributed3.client.task import Task
    from distributed3.keys import KeyRef

    data = [RemoteData(f"d{i}", None, status="finished") for i in range(4)]
    for i, d in enumerate(data):
        d.workers = frozenset({f"w{i}"})
    shared = RemoteData("s", None, status="finished")  # in the kwargs: every element's
    shared.workers = frozenset({"w9"})
    results = Handles(RemoteData(f"r{i}", None, status="pending") for i in range(4))
    msg = {"op": "compute_chunk", "keys": [h.key for h in results],
           "args_list": [(KeyRef(d.key), i) for i, d in enumerate(data)],
           "kwargs": {"s": KeyRef("s")}}  # fmt: skip
    task = Task(results, msg, {**{d.key: d for d in data}, "s": shared}, 0)
    task.refresh_hints()
    rest = task.split(1)
    assert sorted(task.inputs) == ["d0", "s"] and sorted(task.msg["who_has"]) == ["d0", "s"]
    assert sorted(rest.inputs) == ["d1", "d2", "d3", "s"]
    assert sorted(rest.msg["who_has"]) == ["d1", "d2", "d3", "s"]


def test_a_split_chunk_whose_function_cannot_load_fails_only_the_elements_it_kept():
    share = Share(10)
    assert share.split() == 5  # queued, nothing started: half of its elements go
    values, errors = run_chunk(b"not a pickle", list(range(10)), None, None, False, share)
    assert len(values) == 5 and sorted(errors) == list(range(5))
