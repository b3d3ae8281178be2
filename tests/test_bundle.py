"""Tiny tasks of one call sent a few to a message (client/bundle.py): fewer messages,
and each task still its own -- key, result, error, seed, retries -- and a long task
among them holds no other back while a core is free."""
import os
import random
import threading

import pytest

from distributed3 import Pool
from distributed3.bench.tasks import inc
from distributed3.client.dispatch import Batch
from distributed3.client.tasks import make_tasks
from distributed3.exceptions import SerializationError, WorkerPausedError
from distributed3.testing import both_waiting, process_cluster, released, run_in_cluster_loop
from distributed3.utils import wait_for_sync

pytestmark = pytest.mark.timeout(60)


def messages_and_tasks(workers):
    """Task messages and tasks the in-process ``workers`` have had so far."""
    return (sum(w.counters["compute"] + w.counters["compute_chunk"] for w in workers),
            sum(w.tasks_done for w in workers))  # fmt: skip


def draw(_):
    """A number from the task's seeded ``random``."""
    return random.random()


def explode():
    raise ValueError("this argument cannot be loaded here")


class Unloadable:
    """Pickles, but cannot be unpickled: a worker cannot load the task it is in."""

    def __reduce__(self):
        return (explode, ())


def test_tiny_tasks_of_one_call_go_several_to_a_message(pool, workers):
    messages, tasks = messages_and_tasks(workers)
    out = pool.map(inc, range(3000), chunksize=1)
    assert pool.gather(out) == list(range(1, 3001))
    # a reply leaves from its task thread before the worker's loop counts the task
    wait_for_sync(lambda: messages_and_tasks(workers)[1] - tasks >= 3000, 10,
                  "the workers to count the tasks they ran")  # fmt: skip
    more_messages, more_tasks = messages_and_tasks(workers)
    assert more_tasks - tasks == 3000  # each ran once
    assert more_messages - messages < 3000 / 4, (more_messages - messages)  # one each before
    assert len({h.key for h in out}) == 3000  # each its own key, on one worker
    assert all(len(h.workers) == 1 for h in out)


def test_bundled_tasks_get_the_seeds_they_get_in_a_map(pool, workers):
    messages, _ = messages_and_tasks(workers)
    one_by_one = pool.gather(pool.map(draw, range(2000), seed=42, chunksize=1))
    assert messages_and_tasks(workers)[0] - messages < 2000 / 4  # they went bundled
    assert one_by_one == pool.gather(pool.map(draw, range(2000), seed=42, chunksize=500))
    assert len(set(one_by_one)) == 2000


@pytest.mark.parametrize("bad, error", [(threading.Lock, "cannot pickle"),
                                        (Unloadable, "cannot be loaded here")])  # fmt: skip
def test_a_bad_argument_fails_only_its_own_submit(pool, workers, bad, error):
    """One whose argument does not pickle here, or does not load on the worker, fails
    alone: the other tasks of its message go again, each on its own."""
    pool.gather([pool.submit(inc, i) for i in range(500)])  # they are tiny: bundled now
    messages, _ = messages_and_tasks(workers)
    futures = [pool.submit(inc, bad() if i == 1500 else i) for i in range(2000)]
    for i, future in enumerate(futures):
        if i == 1500:
            with pytest.raises(SerializationError, match=error):
                future.result()
        else:
            assert future.result() == i + 1
    assert messages_and_tasks(workers)[0] - messages < 2000 / 2  # mostly bundled


def test_a_worker_that_dies_under_a_bundle_loses_none_of_its_tasks(tmp_path):
    """The tasks of the message it ran go elsewhere, each as a task that was in flight
    there: retried, and each ends once."""
    path = str(tmp_path / "died")

    def die_once(x, path):  # made here, it travels by value, to the worker processes
        """``x + 1``; task 2000 first ends its worker's process, once."""
        if x == 2000 and not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return x + 1

    with process_cluster(2) as (address, _, _), Pool(address) as pool:
        out = pool.map(die_once, range(3000), path=path, chunksize=1)
        assert pool.gather(out) == list(range(1, 3001))
        assert os.path.exists(path)  # one worker did die under it


def test_tasks_behind_a_long_one_in_its_message_go_to_a_free_core(pool, tmp_path):
    """Tiny tasks, then four that wait: those sent in one message with the first one
    that waits come back unrun for the other worker, when it has nothing left to do,
    rather than wait for it to end: two wait at once, one on each worker."""
    go = str(tmp_path / "go")

    def task(x):
        return released(go, x, mark=True) if x == 1 else x

    values = [2] * 600 + [1] * 4 + [2] * 20
    out = both_waiting(go, lambda: pool.gather(pool.map(task, values, chunksize=1)),
                       "a task waited behind another on one worker while the other idled")
    assert out == values


def test_a_bundle_that_a_paused_worker_turned_away_goes_again_in_order(pool):
    """Its tasks go first in the queue, in their order, and the worker rests once."""

    async def turned_away():
        _, tasks = await make_tasks(pool.session, inc, [(i,) for i in range(5)], {})
        batch = Batch(pool.session, [], "paused")
        worker = next(iter(pool.session.cores))
        batch.remaining = len(tasks)
        may_go_on = batch._bundle_setback(worker, tasks, WorkerPausedError("paused here"))
        return may_go_on, list(batch.free) == tasks, batch.resting == {worker}

    assert run_in_cluster_loop(turned_away()) == (False, True, True)


def test_only_tasks_under_a_quarter_millisecond_bundle_and_keep_their_pipeline(pool):
    """A worker's slots (tasks in flight) stay what its depth says: tasks that bundle
    go 16 to a message in 4 messages a core, and those of a depth under 8 (0.25 ms or
    more) one to a message in as many messages as before."""

    async def sizes():
        batch = Batch(pool.session, [], "sizes")
        worker = next(iter(pool.session.cores))  # one core
        out = []
        for depth in (1, 6, 8, 64):
            batch.depth[worker] = depth
            slots = batch._slots(worker)
            out.append((slots, batch._messages(worker), batch._bundle_size(worker, slots)))
        return out

    assert run_in_cluster_loop(sizes()) == [(1, 1, 1), (6, 6, 1), (8, 4, 2), (64, 4, 16)]


def test_a_bundle_refused_after_its_call_failed_fails_its_tasks(pool):
    """Its tasks are not queued for a batch that runs no more: they fail with the
    call's error, and whoever streams them hears of it (on_done)."""

    async def refused():
        _, tasks = await make_tasks(pool.session, inc, [(i,) for i in range(3)], {})
        told = []
        batch = Batch(pool.session, [], "failed", on_done=told.extend)
        batch.remaining = len(tasks)
        batch.fail(RuntimeError("the call was interrupted"))
        batch._bundle_setback(next(iter(pool.session.cores)), tasks, ValueError("refused"))
        return ([str(t.results[0].exception) for t in tasks], len(told), batch.remaining,
                list(batch.free))  # fmt: skip

    errors, told, remaining, queued = run_in_cluster_loop(refused())
    assert errors == ["the call was interrupted"] * 3
    assert told == 3 and remaining == 0 and queued == []
