"""A worker's memory monitor against what the C allocator keeps after Python freed it."""
import pytest

from distributed3.worker.monitor import MemoryMonitor, give_back_freed
from distributed3.worker.store import SpillStore, rss

MB = 1_000_000

pytestmark = pytest.mark.skipif(not give_back_freed(), reason="not glibc: no malloc_trim")


class _Runner:
    paused = False

    def pause(self, why):
        self.paused = True

    def resume(self):
        self.paused = False


def _free_in_the_heap(nbytes):
    """Free ``nbytes`` in blocks of 64 kB, each under a small object that stays: holes
    glibc keeps (resident) until asked to give them back.  Returns the small ones."""
    blocks, kept = [], []
    for i in range(nbytes // 64_000):
        blocks.append(bytearray(64_000))
        kept.append(bytes(1000) + bytes([i % 256]))
    del blocks
    return kept


@pytest.mark.timeout(30)
def test_the_idle_baseline_leaves_out_what_the_process_had_freed():
    """An in-process worker starts in a process that freed 150 MB: counted in its idle
    baseline, a later trim would hide that much of what the tasks hold."""
    kept = _free_in_the_heap(150 * MB)
    inflated = rss()
    store = SpillStore(target=10**9)
    try:
        monitor = MemoryMonitor(10**9, store, _Runner(), "test")
        assert monitor.baseline < inflated - 100 * MB
        held = bytearray(100 * MB)  # touched: resident
        assert monitor.used() >= 90 * MB
        del held
    finally:
        store.close()
    assert kept


@pytest.mark.timeout(30)
def test_memory_freed_but_kept_does_not_pause_the_worker():
    """200 MB freed into the heap's holes after the monitor started, on a limit of
    200 MB: over the pause line by resident memory, but given back, so no pause."""
    store, runner = SpillStore(target=10**9), _Runner()
    try:
        monitor = MemoryMonitor(200 * MB, store, runner, "test")
        kept = _free_in_the_heap(200 * MB)
        assert rss() - monitor.baseline > 160 * MB  # resident: would pause
        assert monitor.check() == "running" and not runner.paused
        assert monitor.used() < 100 * MB
        assert kept
    finally:
        store.close()
