"""One task message: the unit a :class:`~distributed3.client.dispatch.Batch` sends to a
worker and settles from its reply.  :mod:`~distributed3.client.tasks`,
:mod:`~distributed3.client.graph` and :mod:`~distributed3.client.recovery` make them.

>>> task = Task(["results"], {"op": "compute", "key": "x"}, {}, 0)
>>> task.deaths, task.missing_bytes(("127.0.0.1", 1)), task.size
(0, 0, 1)
"""
from ..keys import KeyRef
from .handles import total_bytes

_PER_ELEMENT = ("keys", "args_list", "single_args", "seeds")  # a chunk's lists, see split()

__all__ = ["Task"]


class Task:
    """One message's worth of work: its ``results`` (:class:`~.results.Handles`, or a
    chunk's :class:`~.results.ResultGroup`: the same interface), its compute message,
    its input handles, and the index of its first element."""

    __slots__ = ("results", "msg", "inputs", "index", "deaths", "fallback", "alone")

    def __init__(self, results, msg, inputs, index):
        self.results = results
        self.msg = msg
        self.inputs = inputs
        self.index = index
        self.deaths = 0
        self.fallback = None  # makes it name its inputs one by one, should they be lost
        self.alone = False  # a bundle could not carry it: it goes in a message of its own

    @property
    def key(self):
        """The key of its first result (or of its chunk's results), to name it by."""
        return self.results.key

    @property
    def size(self):
        """How many elements its message runs.

        >>> Task(None, {"op": "compute_chunk", "over": ["g", 10, 25]}, {}, 0).size
        15
        """
        msg = self.msg
        over = msg.get("over")
        if over is not None:
            return over[2] - over[1]
        for field in _PER_ELEMENT[:3]:
            if field in msg:
                return len(msg[field])
        return 1

    def split(self, stop):
        """Keep the elements before ``stop`` (a worker stopped its chunk there, see
        :mod:`distributed3.worker.split`) and return a task of the rest, whose results
        are those elements' own handles; ``None`` when it has none past ``stop``.

        >>> from distributed3.client.handles import RemoteData
        >>> from distributed3.client.results import Handles
        >>> hs = Handles(RemoteData(k, None, status="pending") for k in "abc")
        >>> task = Task(hs, {"op": "compute_chunk", "keys": list("abc"),
        ...                  "args_list": [(1,), (2,), (3,)]}, {}, 10)
        >>> rest = task.split(1)
        >>> task.msg["keys"], rest.msg["keys"], rest.msg["args_list"], rest.index
        (['a'], ['b', 'c'], [(2,), (3,)], 11)
        >>> [h.key for h in task.results], [h.key for h in rest.results], task.split(1)
        (['a'], ['b', 'c'], None)
        """
        if not 0 < stop < self.size:
            return None
        msg = self.msg
        head, rest = dict(msg), dict(msg)
        for field in _PER_ELEMENT:
            if field in msg:
                head[field], rest[field] = msg[field][:stop], msg[field][stop:]
        over = msg.get("over")
        if over is not None:
            key, start, end = over
            head["over"], rest["over"] = [key, start, start + stop], [key, start + stop, end]
        results = self.results.split(stop)  # the results' own handles, apart from a chunk's
        if "group" in rest:  # kept under their own keys, not the chunk's
            del rest["group"]
            rest["keys"] = [h.key for h in results]
        self.msg = head
        task = Task(results, rest, self.inputs, self.index + stop)
        task.fallback = self.fallback
        if self.inputs:  # each fetches (and is placed by) its own elements' inputs only
            self.inputs, task.inputs = _apart(self.inputs, _named(head), _named(rest))
            self.refresh_hints()
            task.refresh_hints()
        return task

    def spread_inputs(self):
        """Name its inputs one by one (its ``fallback``), if it has not yet."""
        if self.fallback is not None:
            self.fallback(self)
            self.fallback = None
            self.refresh_hints()

    def refresh_hints(self):
        """Point the message's ``who_has`` hints at where the inputs are now."""
        if self.inputs:
            self.msg["who_has"] = {k: list(h.workers) for k, h in self.inputs.items()}

    def missing_bytes(self, worker):
        """Bytes of its inputs that ``worker`` lacks; of a chunk it maps over a part of,
        that part's share."""
        over = self.msg.get("over")
        missing = 0
        for key, h in self.inputs.items():
            if worker not in h.workers:
                n = total_bytes(h.nbytes)
                if over is not None and key == over[0]:
                    n = n * (over[2] - over[1]) // max(len(h), 1)
                missing += n
        return missing


def _named(msg):
    """The keys that the arguments of a chunk's elements name (``KeyRef``)."""
    keys = set()
    for field in ("args_list", "single_args"):
        if type(msg.get(field)) in (list, tuple):  # not an array of numbers
            _refs(msg[field], keys)
    return keys


def _refs(obj, keys):
    typ = type(obj)
    if typ is KeyRef:
        keys.add(obj.key)
    elif typ in (list, tuple):
        for o in obj:
            _refs(o, keys)
    elif typ is dict:
        for o in obj.values():
            _refs(o, keys)


def _apart(inputs, head, rest):
    """``inputs`` shared out between the two parts of a split chunk, whose elements
    name ``head`` and ``rest``: those that neither names (in the kwargs, the chunk
    mapped over) go to both.

    >>> _apart({"a": 1, "b": 2, "k": 3}, {"a"}, {"b"})
    ({'a': 1, 'k': 3}, {'b': 2, 'k': 3})
    """
    return ({k: h for k, h in inputs.items() if k in head or k not in rest},
            {k: h for k, h in inputs.items() if k in rest or k not in head})
