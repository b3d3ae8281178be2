"""One batch that tasks join while it runs (client/feed.py): a loop of submits, the
windows of an ``imap``."""
import asyncio
import itertools
import threading

import pytest

from distributed3 import Pool
from distributed3.client.dispatch import Batch
from distributed3.client.feed import Feed
from distributed3.client.tasks import make_tasks
from distributed3.exceptions import SerializationError, WorkerLostError
from distributed3.testing import cluster_in_thread, gated, process_cluster
from distributed3.utils import wait_for_sync


def _frames_messages_and_tasks(pool):
    info = pool.worker_info()
    return tuple(sum(i[field] for i in info.values())
                 for field in ("frames_in", "task_messages", "tasks_done"))  # fmt: skip


def test_submits_in_a_loop_share_frames_and_messages():
    """Each submit is its own task, but a loop of them goes to the workers several to
    a frame, and, once they show they are tiny, several to a message (see
    client/bundle.py), not one frame and one message a task.  Real worker processes:
    in-process ones would share the loop that the caller runs only a turn now and
    then while it submits (see client/inbox.py), and fall behind."""
    with process_cluster(2) as (address, _, _), Pool(address) as pool:
        pool.gather([pool.submit(abs, -i) for i in range(50)])  # connections warm
        frames, messages, tasks = _frames_messages_and_tasks(pool)
        n = 400
        futures = [pool.submit(abs, -i) for i in range(n)]
        assert pool.gather(futures) == list(range(n))
        more_frames, more_messages, more_tasks = _frames_messages_and_tasks(pool)
    assert more_tasks - tasks == n  # each ran once
    assert more_messages - messages < 0.75 * n, (more_messages - messages, n)
    assert more_frames - frames < 0.75 * n, (more_frames - frames, n)  # one each: >= n


def test_a_submit_that_cannot_be_sent_fails_alone(pool):
    """Submits are separate calls: one whose argument does not pickle fails, naming
    its task; those around it, in the same batch, run."""
    first = pool.submit(abs, -1)
    bad = pool.submit(abs, threading.Lock())
    last = pool.submit(abs, -3)
    assert first.result() == 1 and last.result() == 3
    with pytest.raises(SerializationError, match=f"arguments of task {bad.key!r}"):
        bad.result()
    assert pool.submit(abs, -4).result() == 4  # the pool goes on


def test_a_failed_batch_fails_only_its_own_tasks(pool, gate):
    """Whatever fails a feed's batch (here: its run is cancelled) fails the tasks it
    had; a batch started after it runs its own."""
    session = pool.session

    async def go():
        feed = Feed(session, "gated")
        made, tasks = await make_tasks(session, gated, [(0,)], {})
        feed.add(tasks, made)
        await asyncio.sleep(0.05)  # sent: it waits for the gate on its worker
        feed.running.cancel()
        with pytest.raises(WorkerLostError, match="gated was cancelled"):
            await made[0].aget()
        again, tasks = await make_tasks(session, abs, [(-2,)], {})
        feed.add(tasks, again)
        return await again[0].aget()

    assert session.sync(go(), timeout=10) == 2


def test_imap_of_tiny_tasks_reads_ahead_more_but_boundedly(pool):
    """An imap of no-op tasks keeps more in flight once replies show they are tiny (as
    a map would send them), never more than twice the slots of the workers."""
    read, leads = [], []

    def endless():
        for i in itertools.count():
            read.append(i)
            yield i

    it = pool.imap(abs, endless())
    for i in range(3000):
        assert next(it) == i
        leads.append(len(read) - i - 1)
    it.close()
    slots = Batch.slots_per_core * sum(pool.available_cores.values())
    assert max(leads) > 16  # it grew past the first window
    assert max(leads) <= 2 * slots  # and stayed bounded


_LONG_MAY_END = threading.Event()


def _long():
    assert _LONG_MAY_END.wait(30), "never told to end"
    return "long"


@pytest.mark.timeout(60)
def test_a_submit_behind_a_long_one_runs_on_the_workers_free_core():
    """The submit batch has one task running on its only worker, of two cores: the next
    submit takes the other core at once, not the first one's turn (the batch used to
    count the running task against the new one's openings)."""
    with cluster_in_thread(1, ncores=2) as (center, [worker]), Pool(center.address) as pool:
        _LONG_MAY_END.clear()
        long = pool.submit(_long)
        try:  # running before the next one is submitted: not sent with it
            wait_for_sync(lambda: pool.worker_info()[worker.address]["active"] == 1, 10,
                          "the long task to start")  # fmt: skip
            assert pool.submit(abs, -1).result(timeout=10) == 1
            assert long.status == "pending"
        finally:
            _LONG_MAY_END.set()
        assert long.result(timeout=10) == "long"
