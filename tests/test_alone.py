"""An apply's short way (client/alone.py): straight to an idle worker, and what happens
when that way meets a dead, paused or retiring worker, a time limit or a failing task --
each the same as an apply that went through a batch."""
import os
import threading
import time

import numpy as np
import pytest

from distributed3 import Pool, WorkerLostError
from distributed3.exceptions import CommClosedError
from distributed3.client import dispatch
from distributed3.client.alone import apply_alone
from distributed3.client.options import DEFAULTS
from distributed3.testing import held, process_cluster
from distributed3.utils import wait_for_sync


@pytest.fixture
def batches(monkeypatch):
    """How many batches were made since the test started."""
    made = []
    init = dispatch.Batch.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(dispatch.Batch, "__init__", counting)
    return made


def warm(pool):
    """Open the pool's channel to every worker, as earlier calls would have."""
    for worker in pool.session.cores:
        pool.session.sync(pool.session.channels.get(worker))


@pytest.mark.timeout(30)
def test_an_apply_without_inputs_makes_no_batch_and_one_with_an_input_does(pool, batches):
    warm(pool)
    assert [pool.apply(pow, (2, i)).get() for i in range(6)] == [1, 2, 4, 8, 16, 32]
    assert batches == []
    handles = [pool.apply(abs, -i) for i in range(6)]
    assert {w for h in handles for w in h.workers} == set(pool.session.cores)  # in turn
    x = pool.scatter([5])[0]
    assert pool.apply(abs, (x,)).get() == 5  # inputs: the long way, where they live
    assert len(batches) == 1


@pytest.mark.timeout(30)
def test_short_way_results_keep_their_recipe_error_and_time(pool):
    warm(pool)
    handle = pool.apply(np.arange, (3,))
    assert handle.recipe is not None and handle.recipe.args == (3,)
    failed = pool.apply(divmod, (1, 0))
    with pytest.raises(ZeroDivisionError):
        failed.get()
    assert failed.status == "error"


@pytest.mark.timeout(30)
def test_a_short_way_apply_past_its_time_limit_raises_naming_its_worker(pool, gate):
    warm(pool)
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s on worker 127"):
        pool.apply(held, (1,), timeout=0.2)
    gate.set()


@pytest.mark.timeout(30)
def test_a_paused_worker_turns_short_way_applies_to_the_other(pool, workers, batches):
    warm(pool)
    paused, other = workers
    pool.session.loop.call_soon_threadsafe(paused.runner.pause, "test: paused")
    wait_for_sync(lambda: paused.runner.paused is not None, 5, "paused")
    try:
        handles = [pool.apply(pow, (3, i)) for i in range(4)]
        assert pool.gather(handles) == [1, 3, 9, 27]
        assert {w for ws in pool.who_has(handles).values() for w in ws} == {other.address}
        assert batches  # those it turned away went on in a batch
    finally:
        pool.session.loop.call_soon_threadsafe(paused.runner.resume)


@pytest.mark.timeout(30)
def test_a_retiring_worker_sends_a_short_way_apply_elsewhere(pool, workers):
    warm(pool)
    leaving, other = workers
    leaving.retiring = "a test retires it"
    try:
        assert [pool.apply(abs, (-i,)).get() for i in range(4)] == [0, 1, 2, 3]
        assert leaving.tasks_done == 0
    finally:
        leaving.retiring = None


def dies_once():
    """A function whose first call kills its worker; later ones say where they ran.
    Made here, nested, so that it travels by value (the workers cannot import tests)."""

    def die_once(marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return os.getpid()

    return die_once


@pytest.mark.timeout(60)
@pytest.mark.parametrize("way", ["apply", "submit"])
def test_a_worker_dying_under_a_short_way_task_runs_it_again_or_says_why(tmp_path, way):
    with process_cluster(nworkers=2) as (address, _, workers):
        with Pool(address) as pool:
            warm(pool)
            die_once, marker = dies_once(), str(tmp_path / "once")
            if way == "apply":
                pid = pool.apply(die_once, (marker,)).get()
            else:
                pid = pool.submit(die_once, marker).result(timeout=30)
            # its sockets close before it is gone: wait for it to end
            wait_for_sync(lambda: sum(w.proc.poll() is None for w in workers) == 1, 10,
                          "the worker it killed is still there")  # fmt: skip
            (alive,) = [w for w in workers if w.proc.poll() is None]
            assert pid == alive.proc.pid
            if way == "apply":  # no retries: the task fails, naming why
                with pytest.raises(WorkerLostError, match="was running on 1 workers that died"):
                    pool.apply(die_once, (str(tmp_path / "again"),), retries=0).get()


@pytest.mark.timeout(60)
def test_a_short_way_result_lost_with_its_worker_is_made_again():
    with process_cluster(nworkers=2) as (address, _, workers):
        with Pool(address) as pool:
            warm(pool)
            handle = pool.apply(lambda n: np.arange(n), (100_000,))  # too big for the reply
            (holder,) = handle.workers
            pid = pool.worker_info()[holder]["pid"]
            next(w for w in workers if w.proc.pid == pid).kill()
            wait_for_sync(lambda: holder not in pool.session.cores, 15, "the center saw it")
            assert (handle.get() == np.arange(100_000)).all()


@pytest.mark.timeout(30)
def test_the_short_way_steps_aside_for_resources_and_busy_workers(pool, gate):
    warm(pool)
    session = pool.session
    resources = DEFAULTS.replace(resources={"GPU": 1})
    assert session.sync(apply_alone(session, abs, (-1,), {}, resources)) is None
    busy = [pool.submit(held, i) for i in range(2)]  # one on each worker
    wait_for_sync(lambda: all(session.occupancy[w] for w in session.cores), 5, "both busy")
    assert session.sync(apply_alone(session, abs, (-1,), {}, DEFAULTS)) is None
    gate.set()
    assert pool.gather(busy) == [0, 1]
    started = time.monotonic()
    assert session.sync(apply_alone(session, abs, (-1,), {}, DEFAULTS)).get() == 1
    assert time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_a_submit_alone_goes_straight_to_an_idle_worker(pool, batches):
    warm(pool)
    assert [pool.submit(pow, 2, i).result(timeout=10) for i in range(6)] == [1, 2, 4, 8, 16, 32]
    assert batches == []
    assert pool.gather([pool.submit(abs, -i) for i in range(300)]) == list(range(300))


@pytest.mark.timeout(30)
def test_a_submit_alone_in_flight_when_the_pool_closes_fails_and_says_so(center, gate):
    pool = Pool(center.address)
    warm(pool)
    handle = pool.submit(held, 1)
    session = pool.session
    wait_for_sync(lambda: any(session.occupancy.values()), 5, "the task never left")
    pool.close()
    gate.set()
    wait_for_sync(handle.done, 10, "the submit in flight stayed pending")
    with pytest.raises(CommClosedError, match="closed|not running"):
        handle.raise_error()


def fails_fast_else_slow(x):
    if x < 0:
        raise ValueError("negative")
    time.sleep(0.02)
    return x


@pytest.mark.timeout(30)
def test_a_short_way_apply_teaches_no_task_time_as_the_long_way_does_not(pool):
    """One call's time says little of a map's; a failed one's, nothing: a map after a
    fast-failing apply of slow tasks still goes one task per message."""
    warm(pool)
    failed = pool.apply(fails_fast_else_slow, (-1,))
    assert failed.status == "error"
    assert pool.apply(fails_fast_else_slow, (0,)).get() == 0
    assert pool.session.task_times.get(failed.recipe.base) is None
    assert len(pool.map(fails_fast_else_slow, range(40)).spans) == 40


@pytest.mark.timeout(30)
def test_a_short_way_task_counts_as_unfinished_and_in_the_backlog(pool, gate):
    warm(pool)
    session = pool.session
    handle = pool.submit(held, 1)
    wait_for_sync(lambda: session.unfinished() == 1, 5, "the submit was not counted")
    out = {}
    thread = threading.Thread(target=lambda: out.update(h=pool.apply(held, (2,))))
    thread.start()

    def backlog():
        return sum(session.sync(session.center("backlog")).values())

    try:
        wait_for_sync(lambda: session.unfinished() == 2 and backlog() == 2, 5,
                      "the center never heard of both")  # fmt: skip
    finally:
        gate.set()
        thread.join(10)
    assert handle.result(timeout=10) == 1 and out["h"].get() == 2
    wait_for_sync(lambda: session.unfinished() == 0, 5, "still counted once done")
    assert not any(session.occupancy.values())


@pytest.mark.timeout(30)
def test_closing_the_pool_fails_a_short_way_apply_in_another_thread_saying_why(center, gate):
    pool = Pool(center.address)
    warm(pool)
    out = {}

    def call():
        try:
            pool.apply(held, (1,))
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=call)
    thread.start()
    wait_for_sync(lambda: any(pool.session.occupancy.values()), 5, "the apply never left")
    pool.close()
    thread.join(10)
    gate.set()
    assert not thread.is_alive()
    assert isinstance(out.get("error"), CommClosedError), out
    assert "closed before the call ended" in str(out["error"])


@pytest.mark.timeout(60)
def test_a_result_made_again_uses_the_keyword_arguments_of_its_call():
    with process_cluster(nworkers=2) as (address, _, workers):
        with Pool(address) as pool:
            warm(pool)
            kwargs = {"fill_value": 1}
            handle = pool.apply(np.full, (100_000,), kwargs)  # too big for the reply
            kwargs["fill_value"] = 2
            (holder,) = handle.workers
            pid = pool.worker_info()[holder]["pid"]
            next(w for w in workers if w.proc.pid == pid).kill()
            wait_for_sync(lambda: holder not in pool.session.cores, 15, "the center saw it")
            assert (handle.get() == 1).all()
