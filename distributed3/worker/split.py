"""A running chunk's share of its elements: how far its thread has got, and where it
stops, so that the elements it has not started can go to another core.

A chunk runs its elements in a row on one thread.  When a core elsewhere is idle and
nothing is queued, the pool asks the worker to split the chunk: the thread stops
after some element it has not started, and the pool sends the elements after that
to the idle core.  The thread takes its elements a block at a time (a list it
iterates), under a lock: one element per block while elements are slow, up to
``MOST`` while they are fast, so that tiny tasks pay for a lock and a clock read per
thousand elements, not per element.  A split lowers the end of the chunk; when that
end falls inside the block being run, it cuts the block's list short, which the
thread's iteration sees at its next element.  The point where the thread stops is
exact -- no element runs twice, none is skipped -- or, when the thread moved on while
the block was cut, it is left for the chunk's reply to say (``ran``).

>>> share = Share(10)
>>> values = []
>>> share.claim(0, list(range(10)), values)   # the thread takes element 0, alone
[0]
>>> share.split()      # elements 1 to 9 not started: it keeps 1 to 4, 5 to 9 go
5
>>> while block := share.claim(len(values), list(range(10)), values):
...     values.extend(block)                  # the thread, running its blocks
>>> values, share.split()   # it stopped at 5, and has nothing left to give
([0, 1, 2, 3, 4], None)

With ``rest``, every element not started goes: the thread ends with the one it runs.

>>> share, values = Share(10), []
>>> share.claim(0, list(range(10)), values), share.split(rest=True)
([0], 1)

With a ``budget`` (seconds), the elements go one at a time, and none starts once the
chunk has run that long: the rest are for another core, as if split off.

>>> share, values = Share(10, budget=0.01), []
>>> share.claim(0, list(range(10)), values)
[0]
>>> values.append(0); time.sleep(0.02)   # element 0 ran long
>>> share.claim(1, list(range(10)), values), share.limit
([], 1)
"""
import threading
import time

__all__ = ["Share"]

FAST = 0.0005  # s: a block that took less doubles the next one
SLOW = 0.002  # s: a block that took more halves the next one
MOST = 1024  # elements in one block at most


class Share:
    """The elements ``0`` to ``limit`` of a chunk of ``size`` that its thread runs: it
    has taken those before ``claimed``, the last of them as the list ``block`` from
    ``start`` on; ``values`` is its list of results, one per element ended."""

    __slots__ = ("limit", "claimed", "size", "start", "block", "values", "started", "budget",
                 "began", "_lock")  # fmt: skip

    def __init__(self, size, budget=None):
        self.limit = size
        self.budget = budget  # s: past it, the chunk stops after the element that ran
        self.began = None
        self.claimed = self.start = 0
        self.size = 1  # elements in the next block
        self.block = None
        self.values = ()
        self.started = None  # when the current block was taken
        self._lock = threading.Lock()

    def claim(self, i, args_list, values):
        """In the chunk's thread, with the elements before ``i`` ended (their results
        in ``values``): the list of the arguments of the next block to run; empty when
        the chunk stops at ``i``."""
        now = time.perf_counter()
        with self._lock:
            if self.budget is not None:  # one element a block, each after a look at the
                self.began = self.began or now  # time: a chunk that must not run long
                if now - self.began > self.budget:
                    self.limit = min(self.limit, i)
            elif self.started is not None:
                took = now - self.started
                if took < FAST:
                    self.size = min(MOST, 2 * self.size)
                elif took > SLOW:
                    self.size = max(1, self.size // 2)
            self.started = now
            stop = min(self.limit, i + self.size)
            block = args_list[i:stop] if stop > i else []
            if type(block) is not list:  # a slice of an array: a list, to cut short
                block = list(block)
            self.start, self.block, self.values = i, block, values
            self.claimed = max(stop, i)
            return block

    def take_all(self):
        """In the chunk's thread, which will run none of its elements (its function
        could not be loaded): how many it answers for, all the elements left to it."""
        with self._lock:
            self.claimed = self.limit
            return self.limit

    def split(self, rest=False):
        """Stop the chunk after an element its thread has not started, keeping half of
        those it has not (rounded down) and giving the other half away -- or, with
        ``rest``, giving them all away: the new end; ``None`` when it has nothing left
        to give, or when the thread moved on while its block was cut (its reply then
        says where it stopped)."""
        with self._lock:  # no block is taken meanwhile
            values, block, start = self.values, self.block, self.start
            ended = len(values)
            # an element of the block is running, or about to: that one is started
            first = ended + 1 if ended < self.claimed else ended
            left = self.limit - first
            if left < 1:
                return None
            end = first if rest else self.limit - (left + 1) // 2
            self.limit = end
            if end >= self.claimed:  # past the block: the thread stops at its next claim
                return end
            del block[end - start:]  # its iteration ends there
            self.claimed = end
            return end if len(values) == ended else None
