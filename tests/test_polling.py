"""The blocking client's selector polls before it sleeps, only while a caller waits and
only while the waits are short enough to catch."""
import asyncio
import selectors
import socket
import threading
import time

import pytest

from distributed3.client.polling import PollingSelector
from distributed3.client.sync import loop_thread


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _selector(pair, wanted):
    selector = PollingSelector(wanted=lambda: wanted[0])
    selector.register(pair[0], selectors.EVENT_READ)
    return selector


def test_polls_only_while_a_caller_waits(pair):
    wanted = [False]
    selector = _selector(pair, wanted)
    pair[1].send(b"x")
    assert len(selector.select()) == 1 and selector.polls == 0  # nobody waits: as before
    wanted[0] = True
    assert len(selector.select()) == 1 and selector.polls == 1
    selector.close()


def test_an_empty_poll_sleeps_out_the_rest_of_its_timeout(pair):
    selector = _selector(pair, [True])
    start = time.perf_counter()
    assert selector.select(0.05) == []
    assert time.perf_counter() - start >= 0.05
    assert selector.polls > 1  # it polled first, then slept
    assert selector.select(0) == [] and selector.select(-1) == []  # a poll is a poll
    selector.close()


def test_a_wait_a_timer_ended_counts_as_long(pair):
    selector = _selector(pair, [True])
    assert selector.select(10 * PollingSelector.POLL) == []  # it polled, then slept
    polls = selector.polls
    assert selector.select(10 * PollingSelector.POLL) == [] and selector.polls == polls
    selector.close()


def test_a_long_wait_stops_polling_until_a_short_one(pair):
    selector = _selector(pair, [True])
    # a reply that comes well after the polling window: the wait is long
    timer = threading.Timer(10 * PollingSelector.POLL, pair[1].send, [b"x"])
    timer.start()
    assert len(selector.select(10)) == 1
    timer.join()
    assert selector.last_wait > PollingSelector.POLL
    pair[0].recv(10)
    polls = selector.polls
    pair[1].send(b"y")  # ready at once; the last wait was long: no poll, it sleeps at once
    assert len(selector.select(10)) == 1 and selector.polls == polls
    assert selector.last_wait <= PollingSelector.POLL  # short: the next wait polls again
    pair[0].recv(10)
    pair[1].send(b"z")
    assert len(selector.select(10)) == 1 and selector.polls == polls + 1
    selector.close()


def test_the_pool_loop_polls_during_blocking_calls_only():
    lt = loop_thread()
    assert isinstance(lt.selector, PollingSelector)

    async def wanted():
        return lt.selector.wanted()

    assert lt.run_sync(wanted()) is True  # the caller runs the loop and waits on it
    # the daemon running the loop for background work, nobody waiting: no polling
    future = asyncio.run_coroutine_threadsafe(wanted(), lt.loop)
    assert future.result(10) is False


def test_a_blocking_round_trip_is_caught_by_polling(pool):
    lt = pool.session.loop_thread
    assert pool.apply(abs, (-1,)).get() == 1  # channels open, short waits seen
    for i in range(5):
        lt.selector.last_wait = 0.0  # as after a short wait, however long the last one was
        polls = lt.selector.polls
        assert pool.apply(abs, (-i,)).get() == i
        assert lt.selector.polls > polls  # it waited for the reply polling first
