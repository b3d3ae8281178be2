"""A worker's data under a memory limit: LRU spill to disk and back, and the limits."""
import errno
import os

import numpy as np
import pytest

from distributed3.keys import Parts
from distributed3.worker import store as store_module
from distributed3.worker.store import SpillStore, machine_memory, parse_memory_limit


@pytest.fixture
def store(tmp_path):
    s = SpillStore(target=250_000, directory=str(tmp_path))
    yield s
    s.close()


def test_it_behaves_like_a_dict_while_the_least_recently_used_values_go_to_disk(store):
    arrays = {f"k{i}": np.full(10_000, i, dtype="f8") for i in range(10)}  # 80 kB each
    store.update(arrays)
    assert store.memory_bytes <= store.target and store.disk_bytes == 7 * 80_000
    assert store.spilled_keys() == [f"k{i}" for i in range(7)]  # the oldest went first
    assert len(os.listdir(store.path)) == 7
    assert sorted(store) == sorted(arrays) and len(store) == 10 and "k3" in store
    for key, array in arrays.items():  # read back intact, writable, whatever was on disk
        got = store[key]
        assert got.dtype == array.dtype and np.array_equal(got, array)
        got[0] = -1
    assert store.memory_bytes <= store.target
    assert dict(store.items()).keys() == arrays.keys()


def test_deleting_a_key_removes_its_file_and_close_the_directory(store):
    store["a"] = np.zeros(40_000)  # 320 kB: over the target alone, so it goes out
    assert store.spilled_keys() == ["a"] and len(os.listdir(store.path)) == 1
    del store["a"]
    assert "a" not in store and os.listdir(store.path) == [] and store.disk_bytes == 0
    store["b"] = Parts([1, 2, 3], gone={})
    assert store["b"][1] == 2 and store.pop("b")[2] == 3
    with pytest.raises(KeyError):
        store["nope"]
    path = store.path
    store.close()
    assert not os.path.exists(path)


def test_a_value_the_disk_refuses_stays_in_memory(store, monkeypatch, caplog):
    def full(path, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_write", full)
    for i in range(5):
        store[i] = np.full(10_000, i)
    assert store.spilled_keys() == [] and len(store.memory) == 5  # nothing lost
    assert [float(store[i][0]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert sum("No space left on device" in r.message for r in caplog.records) == 1


def test_memory_limits_in_every_form():
    assert parse_memory_limit("512MB") == 512_000_000
    assert parse_memory_limit("1.5GiB") == 3 * 2**29
    assert parse_memory_limit(2_000_000) == 2_000_000
    assert parse_memory_limit("0.5") == machine_memory() // 2
    assert parse_memory_limit("auto", processes=4) == machine_memory() // 4
    assert parse_memory_limit(None) is None and parse_memory_limit("0") is None
    for bad in ("lots", "-1", "12XB"):
        with pytest.raises(ValueError, match="memory limit"):
            parse_memory_limit(bad)
