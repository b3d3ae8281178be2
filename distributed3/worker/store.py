"""A worker's data under a memory limit: least recently used values spill to disk.

::

    store[key] = value        kept in memory; above target bytes, the least recently
                              used values go to files, one per key, in a spill directory
    store[key]                read back from its file if it had spilled (and kept in
                              memory again: it is the most recently used now)
    del store[key]            its file too;  store.close(): the directory too

Values are written as the frames of :func:`~distributed3.core.protocol.dumps`, so
an array's memory goes to the file as it is, and comes back in one read.  A value
that cannot be written (a full disk, an unpicklable object) stays in memory: nothing
is lost, and the cause is logged once.

>>> import numpy as np
>>> store = SpillStore(target=100_000)
>>> store["a"] = np.zeros(10_000)         # 80 kB
>>> store["b"] = np.ones(10_000)          # 80 kB more: "a" goes to disk
>>> store.spilled_keys(), store.memory_bytes
(['a'], 80000)
>>> float(store["a"].sum()), store.spilled_keys()    # back in memory; "b" went out
(0.0, ['b'])
>>> store.close()
"""
import logging
import os
import shutil
import struct
import tempfile
from collections import OrderedDict
from collections.abc import MutableMapping

from ..core.protocol import dumps, loads, sizeof

logger = logging.getLogger(__name__)

__all__ = ["SpillStore", "memory_info", "parse_memory_limit", "machine_memory", "rss"]

_U64 = struct.Struct("<Q")


def machine_memory():
    """Bytes of physical memory on this machine.

    >>> machine_memory() > 2**26
    True
    """
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def rss():
    """Resident bytes of this process (0 where ``/proc`` is not there).

    >>> rss() > 0
    True
    """
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def memory_info(data, limit, held):
    """What a worker reports of its memory, for ``data`` (a dict or a SpillStore) whose
    values take ``held`` bytes in all.

    >>> memory_info({}, None, 10)["managed_bytes"]
    10
    """
    if isinstance(data, SpillStore):
        managed, spilled = data.memory_bytes, data.disk_bytes
    else:
        managed, spilled = held, 0
    return {"memory_limit": limit, "managed_bytes": managed, "spilled_bytes": spilled,
            "rss": rss()}


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_memory_limit(value, processes=1):
    """Bytes from ``value``: a number of bytes (``"512MB"``, ``"2GiB"``, ``4e9``), a
    fraction of the machine's memory (``"0.25"``), ``"auto"`` (the machine's memory
    shared by ``processes`` workers), or ``None``/``0`` (no limit: ``None``).

    >>> parse_memory_limit("512MB"), parse_memory_limit("2GiB"), parse_memory_limit(None)
    (512000000, 2147483648, None)
    >>> parse_memory_limit("0.5") == machine_memory() // 2
    True
    >>> parse_memory_limit("lots")
    Traceback (most recent call last):
    ...
    ValueError: memory limit 'lots': give bytes ('512MB', '2GiB'), a fraction of the machine ('0.25') or 'auto'
    """
    if value in (None, 0, "0", ""):
        return None
    text = str(value).strip().lower().replace(" ", "")
    if text == "auto":
        return machine_memory() // max(1, processes)
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        amount = float(number)
    except ValueError:
        amount = None
    if amount is None or unit not in _UNITS or amount <= 0:
        raise ValueError(f"memory limit {value!r}: give bytes ('512MB', '2GiB'), a fraction "
                         "of the machine ('0.25') or 'auto'")
    if amount <= 1 and not unit:
        return int(machine_memory() * amount)
    return int(amount * _UNITS[unit])


class SpillStore(MutableMapping):
    """A dict whose least recently used values go to files once the values in memory
    pass ``target`` bytes (see the module).  ``directory``: where the spill directory
    is made (default: the system's temporary directory)."""

    def __init__(self, target, directory=None):
        self.target = target
        self.memory = OrderedDict()  # key -> value, least recently used first
        self.sizes = {}  # key -> bytes, in memory or on disk
        self.on_disk = {}  # key -> path
        self.memory_bytes = 0
        self.disk_bytes = 0
        self.path = tempfile.mkdtemp(prefix="distributed3-spill-", dir=directory)
        self._count = 0
        self._failed = False  # a write failed: said once

    def __repr__(self):
        return (f"<SpillStore {len(self.memory)} in memory ({self.memory_bytes} B), "
                f"{len(self.on_disk)} on disk ({self.disk_bytes} B)>")

    def __len__(self):
        return len(self.memory) + len(self.on_disk)

    def __iter__(self):
        yield from list(self.memory)
        yield from list(self.on_disk)

    def __contains__(self, key):
        return key in self.memory or key in self.on_disk

    def __getitem__(self, key):
        if key in self.memory:
            self.memory.move_to_end(key)
            return self.memory[key]
        path = self.on_disk[key]  # KeyError if neither
        value = _read(path)
        self._forget_file(key)
        self._keep(key, value, self.sizes[key])
        return value

    def peek(self, key):
        """The value, read from its file if spilled but left there: for sending it away
        (``get_data``), which must not push the values in memory out to make room.

        >>> store = SpillStore(target=0); store["x"] = [1, 2]
        >>> store.peek("x"), store.spilled_keys()
        ([1, 2], ['x'])
        >>> store.close()
        """
        if key in self.memory:
            return self.memory[key]
        return _read(self.on_disk[key])

    def __setitem__(self, key, value):
        if key in self:
            del self[key]
        self._keep(key, value, sizeof(value))

    def __delitem__(self, key):
        if key in self.memory:
            del self.memory[key]
            self.memory_bytes -= self.sizes.pop(key)
        else:
            self._forget_file(key)  # KeyError if it is not there either
            del self.sizes[key]

    def spill_bytes(self, nbytes):
        """Spill the least recently used values until ``nbytes`` are written or none is
        left in memory (the process holds more than the results: see monitor.py);
        returns the bytes written.

        >>> store = SpillStore(target=10**9); store["a"] = bytes(100); store["b"] = bytes(100)
        >>> store.spill_bytes(1), store.spilled_keys()
        (100, ['a'])
        >>> store.close()
        """
        written = 0
        for key in list(self.memory):
            if written >= nbytes:
                break
            size = self.sizes[key]
            if not self._spill(key):
                break
            written += size
        return written

    def spilled_keys(self):
        """The keys whose values are on disk now."""
        return list(self.on_disk)

    def close(self):
        """Remove every file and the directory."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.memory.clear()
        self.on_disk.clear()
        self.sizes.clear()
        self.memory_bytes = self.disk_bytes = 0

    def _keep(self, key, value, nbytes):
        self.memory[key] = value
        self.sizes[key] = nbytes
        self.memory_bytes += nbytes
        self._spill_down()

    def _spill_down(self):
        """Write the least recently used values out until memory is under ``target``;
        the one just kept goes last, and only if it alone is over."""
        for key in list(self.memory):
            if self.memory_bytes <= self.target:
                return
            if not self._spill(key):
                return  # the disk refuses: keep the rest in memory

    def _spill(self, key):
        self._count += 1
        path = os.path.join(self.path, str(self._count))
        try:
            _write(path, self.memory[key])
        except Exception as e:
            if not self._failed:
                self._failed = True
                logger.warning("Could not spill %r to %s, keeping it in memory: %s: %s",
                               key, self.path, type(e).__name__, e)  # fmt: skip
            try:
                os.unlink(path)
            except OSError:
                pass
            return False
        del self.memory[key]
        self.memory_bytes -= self.sizes[key]
        self.disk_bytes += self.sizes[key]
        self.on_disk[key] = path
        return True

    def _forget_file(self, key):
        path = self.on_disk.pop(key)
        self.disk_bytes -= self.sizes[key]
        try:
            os.unlink(path)
        except OSError:
            pass


def _write(path, value):
    frames = dumps(value)
    with open(path, "wb") as f:
        f.write(_U64.pack(len(frames)))
        for frame in frames:
            f.write(_U64.pack(memoryview(frame).nbytes))
        for frame in frames:
            f.write(frame)


def _read(path):
    with open(path, "rb") as f:
        (n,) = _U64.unpack(f.read(8))
        lengths = struct.unpack(f"<{n}Q", f.read(8 * n))
        frames = []
        for length in lengths:
            buf = bytearray(length)
            f.readinto(buf)
            frames.append(buf)
    return loads(frames)
