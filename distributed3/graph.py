"""Task graphs as plain tables: parsing, ordering, and running one node on a worker.

A graph is what dask hands a scheduler: a mapping ``{key: task}`` (old-style tuples such
as ``{"x": 1, "y": (inc, "x")}``, or dask's task-spec nodes), or an object with
``__dask_graph__()`` (the expressions recent ``dask.compute`` passes).  :func:`parse`
turns any of them into a :class:`Graph` of nodes that each take ``{dependency: value}``
and return their value; dask's own ``convert_legacy_graph`` and ``order`` do the work
when dask is installed, and a small evaluator of tuple tasks when it is not.  Nothing
here does I/O: :mod:`distributed3.client.graph` runs the graph on the cluster.

>>> from operator import add
>>> g = parse({"x": 1, "y": (add, "x", 10), "z": (sum, ["x", "y"])}, legacy=True)
>>> sorted(g.nodes), sorted(g.dependencies["z"])
(['x', 'y', 'z'], ['x', 'y'])
>>> g.nodes["z"]({"x": 1, "y": 11})
12
"""
import pickle
import threading
from collections import deque

_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


class Graph:
    """``nodes {key: callable(values) -> value}``, ``dependencies {key: frozenset}``
    (keys the node reads, all in ``nodes``), ``given {key: value}`` (keys whose value is
    already a handle to data on the cluster, e.g. after ``persist``).

    >>> g = Graph({"a": lambda v: 1}, {"a": frozenset()})
    >>> g.given, g.dependents()
    ({}, {'a': []})
    """

    def __init__(self, nodes, dependencies, given=None, legacy=False):
        self.nodes = nodes
        self.dependencies = dependencies
        self.given = given or {}
        self.legacy = legacy  # nodes are LegacyNode, not dask's

    def dependents(self):
        """``{key: [keys of the nodes that read it]}``."""
        out = {k: [] for k in self.nodes}
        for key, deps in self.dependencies.items():
            for dep in deps:
                out[dep].append(key)
        return out

    def cull(self, keys):
        """The graph of just what ``keys`` need.

        >>> g = parse({"a": 1, "b": (abs, "a"), "c": 2}, legacy=True)
        >>> sorted(g.cull(["b"]).nodes)
        ['a', 'b']
        """
        need, todo = set(), deque(keys)
        while todo:
            key = todo.pop()
            if key not in need:
                need.add(key)
                todo.extend(self.dependencies[key])
        if len(need) == len(self.nodes):
            return self
        return Graph({k: self.nodes[k] for k in need}, {k: self.dependencies[k] for k in need},
                     {k: v for k, v in self.given.items() if k in need}, self.legacy)  # fmt: skip

    def order(self):
        """``{key: priority}``, lower first: dask's ``order`` (which keeps memory low by
        finishing branches before starting new ones) if dask is installed, else a
        depth-first topological order from the outputs.

        >>> g = parse({"a": 1, "b": (abs, "a")}, legacy=True)
        >>> g.order()["a"] < g.order()["b"]
        True
        """
        try:
            from dask.order import order
        except ImportError:
            order = None
        if order is None or self.legacy:
            return topological(self.dependencies)
        return order(self.nodes, dependencies=self.dependencies)


def topological(dependencies):
    """``{key: position}`` with every key after its dependencies.

    >>> topological({"c": {"a", "b"}, "a": set(), "b": {"a"}})
    {'a': 0, 'b': 1, 'c': 2}
    """
    out, visiting = {}, set()
    for root in sorted(dependencies, key=str):
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if key in out:
                continue
            if expanded:
                visiting.discard(key)
                out[key] = len(out)
                continue
            if key in visiting:
                raise ValueError(f"the graph has a cycle through {key!r}")
            visiting.add(key)
            stack.append((key, True))
            stack.extend((d, False) for d in sorted(dependencies[key], key=str) if d not in out)
    return out


def parse(dsk, handle_type=type(None), legacy=False):
    """A :class:`Graph` of ``dsk``; values that are ``handle_type`` (data already on the
    cluster) go into ``given``.  ``legacy``: use the evaluator here even if dask is
    installed (it reads tuple graphs only).

    >>> parse({"x": (len, [1, 2])}, legacy=True).nodes["x"]({})
    2
    """
    if not legacy:
        try:
            from dask._task_spec import DataNode, convert_legacy_graph
        except ImportError:
            legacy = True
    if not hasattr(dsk, "items"):
        dsk = dsk.__dask_graph__()
    if legacy:
        nodes = {k: LegacyNode(k, task, dsk) for k, task in dsk.items()}
        given = {k: v for k, v in dsk.items() if isinstance(v, handle_type)}
    else:
        nodes = dict(convert_legacy_graph(dsk))
        given = {k: n.value for k, n in nodes.items()
                 if type(n) is DataNode and isinstance(n.value, handle_type)}  # fmt: skip
    dependencies = {}
    for key, node in nodes.items():
        deps = node.dependencies
        missing = [d for d in deps if d not in nodes]
        if missing:
            raise KeyError(f"the graph has no key {missing[0]!r}, which {key!r} needs")
        dependencies[key] = deps
    return Graph(nodes, dependencies, given, legacy)


class LegacyNode:
    """A tuple task ``(func, *args)`` (or a literal) of an old-style graph: what dask's
    own scheduler does with it, for when dask is not installed.

    Arguments are evaluated as dask does: a tuple whose first item is callable is a call,
    a list is a list of evaluated items, a hashable item that is a key of the graph is
    that key's value, anything else is itself.

    >>> LegacyNode("y", (max, ["x", 1, (abs, -5)]), {"x": 0, "y": None})({"x": 3})
    5
    """

    __slots__ = ("key", "task", "dependencies")

    def __init__(self, key, task, graph):
        self.key = key
        self.task = task
        self.dependencies = frozenset(_references(task, graph, key))

    def __call__(self, values):
        return _evaluate(self.task, values)

    def __repr__(self):
        return f"LegacyNode({self.key!r})"


def _references(task, graph, own):
    typ = type(task)
    if typ is tuple and task and callable(task[0]):
        for arg in task[1:]:
            yield from _references(arg, graph, own)
    elif typ is list:
        for arg in task:
            yield from _references(arg, graph, own)
    else:
        try:
            if task in graph:  # its own key too: a cycle, which ordering reports
                yield task
        except TypeError:  # not hashable: a value
            pass


def _evaluate(task, values):
    typ = type(task)
    if typ is tuple and task and callable(task[0]):
        return task[0](*[_evaluate(a, values) for a in task[1:]])
    if typ is list:
        return [_evaluate(a, values) for a in task]
    try:
        if task in values:
            return values[task]
    except TypeError:
        pass
    return task


def find_handles(obj, handle_type, found):
    """Add to ``found`` every ``handle_type`` instance inside ``obj`` (containers, and
    dask's task-spec nodes), by key.

    >>> found = {}
    >>> class H:
    ...     key = "h"
    >>> find_handles((len, [1, {"a": H()}]), H, found); list(found)
    ['h']
    """
    typ = type(obj)
    if typ in _PLAIN:
        return
    if isinstance(obj, handle_type):
        found[obj.key] = obj
    elif typ in (tuple, list, set, frozenset):
        for o in obj:
            if type(o) not in _PLAIN:
                find_handles(o, handle_type, found)
    elif typ is dict:
        for o in obj.values():
            find_handles(o, handle_type, found)
    elif typ.__module__ == "dask._task_spec":
        for name in ("args", "kwargs", "value", "task"):
            find_handles(getattr(obj, name, None), handle_type, found)
    elif typ is LegacyNode:
        find_handles(obj.task, handle_type, found)


# -- handles inside a node: they travel as keys and are read back as the values -------

_inputs = threading.local()


def _input_value(key):
    """What a handle in a node's pickle becomes on the worker: its value."""
    return _inputs.values[key]


def dumps_with_handles(node, handle_type):
    """``node`` pickled, each ``handle_type`` instance in it as a reference to its key
    that :func:`run_node` turns into the value.

    >>> class H:
    ...     key = "h"
    >>> blob = dumps_with_handles([H(), 2], H)
    >>> run_node(blob, {"h": 1}, pickled=True, call=False)
    [1, 2]
    """
    import io

    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, handle_type):
                return _input_value, (obj.key,)
            return super().reducer_override(obj)

    out = io.BytesIO()
    Pickler(out, protocol=5).dump(node)
    return out.getvalue()


def run_node(node, values, pickled=False, call=True):
    """Run one node of a graph on a worker: ``node(values)``.  ``pickled``: ``node`` is
    the bytes of :func:`dumps_with_handles`, whose handles ``values`` fills in.

    >>> run_node(LegacyNode("y", (abs, "x"), {"x": 0}), {"x": -3})
    3
    """
    if pickled:
        _inputs.values = values
        try:
            node = pickle.loads(node)
        finally:
            _inputs.values = None
    return node(values) if call else node


