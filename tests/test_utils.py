"""Small helpers: addresses, loopback checks, waiting with a deadline, pausing the GC."""
import asyncio
import gc
import threading

import pytest

from distributed3.utils import (
    GC_PAUSE_MIN,
    format_address,
    gc_paused,
    is_loopback,
    parse_address,
    wait_for,
    wait_for_sync,
)


def test_addresses_round_trip_and_bad_ones_say_what_is_wrong():
    for text in ("127.0.0.1:8787", "[::1]:8787", "example.org:1"):
        assert format_address(parse_address(text)) == text
    assert parse_address(["10.0.0.1", 80]) == ("10.0.0.1", 80)
    with pytest.raises(ValueError, match="'localhost' has no port"):
        parse_address("localhost")
    with pytest.raises(ValueError, match=r"'\[::1\]' has no port"):
        parse_address("[::1]")
    with pytest.raises(TypeError, match="expected an address like 'host:port', got 5"):
        parse_address(5)


def test_loopback_is_this_machine_only():
    assert all(map(is_loopback, ["127.0.0.1", "127.255.0.9", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.1", "example.org", ""]))


def test_wait_for_sync_returns_once_true_and_names_what_never_came():
    flag = threading.Event()
    threading.Thread(target=flag.set).start()  # another thread makes it true
    wait_for_sync(flag.is_set, 10, "never set")
    with pytest.raises(TimeoutError, match=r"the worker never came \(waited 0.05 s\)"):
        wait_for_sync(lambda: False, 0.05, "the worker never came")


def test_wait_for_lets_the_loop_run_while_it_waits():
    async def main():
        box = []
        asyncio.get_running_loop().call_soon(box.append, 1)  # runs only if wait_for yields
        await wait_for(lambda: box, 10, "the loop never ran the callback")
        with pytest.raises(TimeoutError, match=r"nothing \(waited 0.05 s\)"):
            await wait_for(lambda: False, 0.05, "nothing")

    asyncio.run(main())


def test_gc_paused_only_for_big_blocks_and_leaves_the_switch_as_it_found_it():
    assert gc.isenabled()
    with gc_paused(GC_PAUSE_MIN):  # small: not worth the two calls
        assert gc.isenabled()
    with gc_paused(GC_PAUSE_MIN + 1):
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


class _Made:
    """A container gc tracks, made inside the block."""


def test_gc_paused_sends_what_a_big_block_made_to_the_oldest_generation():
    import gc

    from distributed3.utils import GC_PROMOTE_MIN, gc_paused

    with gc_paused(GC_PROMOTE_MIN):
        made = _Made()
    assert gc.isenabled()
    assert any(o is made for o in gc.get_objects(generation=2))


def test_gc_paused_leaves_objects_someone_froze_frozen():
    import gc

    from distributed3.utils import GC_PROMOTE_MIN, gc_paused

    kept = _Made()
    gc.freeze()
    try:
        with gc_paused(GC_PROMOTE_MIN):
            _Made()
        # still frozen: in no generation the collector walks (the count alone would not
        # do: a thread left by another test may free frozen objects meanwhile)
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())  # the check above can see it
