"""The benchmark's tables: medians per system, then each target's ratio from the same run.

>>> rows = [("tasks/s", {"a": 1000.0, "b": None}), ("bytes", {"a": 0})]
>>> print(table(rows, ["a", "b"]))
workload      a  b
tasks/s   1,000  —
bytes         0  —
"""
import sys
import textwrap

from .graphs import graph_spec
from .pipeline import pipeline_spec
from .tasks import MAKESPAN, ideal_makespan

__all__ = ["graph_rows", "pipeline_rows", "print_report", "table"]


def _fmt(value):
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows, columns):
    """Rows of ``(label, {column: value})`` as aligned text."""
    width = max([len("workload")] + [len(label) for label, _ in rows])
    cells = [[_fmt(values.get(c)) for c in columns] for _, values in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["workload".ljust(width) + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths))]
    for (label, _), row in zip(rows, cells):
        lines.append(label.ljust(width) + "".join(f"  {v:>{w}}" for v, w in zip(row, widths)))
    return "\n".join(lines)


def _size(n):
    return f"{n / 1e9:g} GB" if n >= 1e9 else f"{n / 1e6:g} MB"


def _get(result, *path):
    for step in path:
        if not isinstance(result, dict) or step not in result:
            return None
        result = result[step]
    return result


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def measurements(results):
    """``[(label, {column: value})]`` of every measurement, one row per workload."""
    systems = results["systems"]
    config = results["config"]
    raw = results["raw"]
    columns = [*systems, "raw limit"]
    rows = []
    for n in config["map"]:
        rows.append((f"{n:,} no-op map+gather, own chunks (tasks/s)",
                     {s: _get(r, "map", str(n)) for s, r in systems.items()}))  # fmt: skip
        rows.append((f"{n:,} no-op map+gather, 1 task/message (tasks/s)",
                     {s: _get(r, "map1", str(n)) for s, r in systems.items()}))  # fmt: skip
        rows.append((f"{n:,} no-op submits in a loop, then results (tasks/s)",
                     {s: _get(r, "submits", str(n)) for s, r in systems.items()}))  # fmt: skip
        rows.append((f"{n:,} no-op imap, values as they come (tasks/s)",
                     {s: _get(r, "imap", str(n)) for s, r in systems.items()}))  # fmt: skip
    rows.append(("tiny task round trip, apply+get (us)",
                 {**{s: _get(r, "roundtrip_us") for s, r in systems.items()},
                  "raw limit": raw.get("ping_pong_us")}))  # fmt: skip
    rows.append(("  raw ping-pong, the client polling as ours does (us)",
                 {"raw limit": raw.get("ping_pong_polling_us")}))  # fmt: skip
    for size in config["transfer"]:
        rows.append((f"{_size(size)} array worker to worker (MB/s)",
                     {**{s: _get(r, "transfer", str(size)) for s, r in systems.items()},
                      "raw limit": raw.get(f"socket {size}")}))  # fmt: skip
        rows.append(("  raw socket into fresh memory (MB/s)",
                     {"raw limit": raw.get(f"socket fresh {size}")}))  # fmt: skip
    if any(_get(r, "makespan") for r in systems.values()):
        for label, lengths in MAKESPAN.items():
            ideal = ideal_makespan(lengths)
            rows.append((f"makespan / ideal ({ideal:g} s), {label}",
                         {s: _ratio(_get(r, "makespan", label), ideal)
                          for s, r in systems.items()}))  # fmt: skip
    rows.append(("bytes moved, map over resident data",
                 {s: _get(r, "moved_bytes") for s, r in systems.items()}))  # fmt: skip
    rows.append(("local cluster up + first result (s)",
                 {**dict(results["startup"]), "raw limit": results["startup"].get("python")}))
    rows.append(("idle worker RSS (MB)", {s: _get(r, "worker_rss_mb") for s, r in systems.items()}))
    rows.append(("whole local cluster RSS (MB)",
                 {s: _get(r, "cluster_rss_mb") for s, r in systems.items()}))  # fmt: skip
    return rows, columns


PIPELINE_ROWS = [("makespan, first put to result in hand (s)", "makespan"),
                 ("bytes moved worker to worker (MB)", "moved_bytes"),
                 ("bytes through the parent, pickled (MB)", "parent_bytes"),
                 ("peak summed worker RSS (MB)", "peak_worker_mb"),
                 ("peak client / parent RSS (MB)", "peak_parent_mb")]  # fmt: skip


def _mb(value):
    return value / 1e6 if isinstance(value, (int, float)) else value


def pipeline_rows(results):
    """The data pipeline's explanation line, and its ``[(measure, {system: value})]``.

    >>> results = {"config": {"pipeline": {"arrays": 2, "elements": 1000}},
    ...            "systems": {"a": {"pipeline": {"makespan": 0.5, "moved_bytes": 8000,
    ...                        "parent_bytes": 16000, "peak_worker_mb": 60.0,
    ...                        "peak_parent_mb": 40.0}}, "b": {}}}
    >>> what, rows = pipeline_rows(results)
    >>> print(table(rows, ["a", "b"]))
    workload                                       a  b
    makespan, first put to result in hand (s)  0.500  —
    bytes moved worker to worker (MB)          0.008  —
    bytes through the parent, pickled (MB)     0.016  —
    peak summed worker RSS (MB)                60.00  —
    peak client / parent RSS (MB)              40.00  —
    """
    spec = pipeline_spec(results["config"].get("pipeline"))
    what = (f"Data pipeline: {spec['arrays']} arrays of {_size(spec['elements'] * 8)} put on the "
            "cluster, map 2*sqrt(a), map a - mean(a) over its results, one task totals them "
            "all; 3 floats back. Moved: by the workers' own counters (ray's workers share one "
            "object store, whose pages count in the RSS of each worker that reads them).")
    runs = {s: _get(r, "pipeline") or {} for s, r in results["systems"].items()}
    rows = []
    for label, field in PIPELINE_ROWS:
        scale = _mb if field.endswith("_bytes") else (lambda v: v)
        rows.append((label, {s: scale(run[field]) if field in run else None
                             for s, run in runs.items()}))  # fmt: skip
    return what, rows


def graph_rows(results):
    """The task graphs' explanation line, and their ``[(measure, {system: value})]``.

    >>> results = {"config": {"graphs": {"tree": [10], "mean": {"bytes": 8000, "chunks": 2}}},
    ...            "systems": {"a": {"graphs": {"tree 10": {"tasks_per_s": 900.0},
    ...                        "mean": {"seconds": 0.5, "peak_worker_mb": 60.0}}}, "b": {}}}
    >>> what, rows = graph_rows(results)
    >>> print(table(rows, ["a", "b"]))
    workload                                         a  b
    tree of 10 no-op tasks (tasks/s)               900  —
    mean of 0.008 MB random array, 2 chunks (s)  0.500  —
      peak summed worker RSS (MB)                60.00  —
    """
    spec = graph_spec(results["config"].get("graphs")) or {}
    what = ("Task graphs through each system's dask scheduler (dask.compute(x, scheduler=...)): "
            "a tree is n/2 leaves inc(i) then add() in pairs; the arrays are dask.array's "
            "random, seeded, the same for every system. dask-threads: dask's local threaded "
            "scheduler in one process (its RSS is the whole process).")
    runs = {s: _get(r, "graphs") or {} for s, r in results["systems"].items()}
    runs = {s: run for s, run in runs.items() if run}
    rows = []
    for n in spec.get("tree", ()):
        rows.append((f"tree of {n:,} no-op tasks (tasks/s)",
                     {s: _get(run, f"tree {n}", "tasks_per_s") for s, run in runs.items()}))
    labels = {}
    if "mean" in spec:
        m = spec["mean"]
        labels["mean"] = f"mean of {_size(m['bytes'])} random array, {m['chunks']} chunks (s)"
    if "matmul" in spec:
        n, c = spec["matmul"]["n"], spec["matmul"]["chunks"]
        labels["matmul"] = f"(x @ x).sum(), x {n:,}^2 in {c * c:,} chunks (s)"
    for field, label in labels.items():
        rows.append((label, {s: _get(run, field, "seconds") for s, run in runs.items()}))
        rows.append(("  peak summed worker RSS (MB)",
                     {s: _get(run, field, "peak_worker_mb") for s, run in runs.items()}))
    return what, rows


def targets(results):
    """``[(target, measured ratio or value, "yes"/"no"/"—")]`` for the issue's targets."""
    systems = results["systems"]
    d3 = systems.get("distributed3", {})
    out = []

    def check(label, value, ok):
        out.append((label, value, "—" if value is None else ("yes" if ok(value) else "no")))

    _map_targets(systems, results["config"]["map"], check)
    check("round trip: / raw tornado ping-pong (<= 2)",
          _ratio(_get(d3, "roundtrip_us"), results["raw"].get("ping_pong_us")),
          lambda r: r <= 2)  # fmt: skip
    # ours polls while a call waits (client/polling.py); so may the ping-pong's client
    check("round trip: / raw ping-pong, its client polling too (<= 2)",
          _ratio(_get(d3, "roundtrip_us"), results["raw"].get("ping_pong_polling_us")),
          lambda r: r <= 2)  # fmt: skip
    _apart_targets(results, check)
    for size in results["config"]["transfer"]:
        ours = _get(d3, "transfer", str(size))
        check(f"{_size(size)} transfer: / raw socket (>= 0.70)",
              _ratio(ours, results["raw"].get(f"socket {size}")), lambda r: r >= 0.7)
        check(f"{_size(size)} transfer: / raw socket into fresh memory (>= 0.70)",
              _ratio(ours, results["raw"].get(f"socket fresh {size}")), lambda r: r >= 0.7)
    check("map over resident data: bytes moved (0)", _get(d3, "moved_bytes"), lambda b: b == 0)
    startup = results["startup"]
    check("start-up: / dask LocalCluster (<= 0.33)",
          _ratio(startup.get("distributed3"), startup.get("dask")), lambda r: r <= 1 / 3)
    for field, what in (("worker_rss_mb", "idle worker"), ("cluster_rss_mb", "whole cluster")):
        check(f"{what} memory: / dask (<= 0.67)",
              _ratio(_get(d3, field), _get(systems, "dask", field)), lambda r: r <= 2 / 3)
    for label, seconds in (_get(d3, "makespan") or {}).items():
        check(f"makespan / ideal, {label} (<= 1.05)",
              _ratio(seconds, ideal_makespan(MAKESPAN[label])), lambda r: r <= 1.05)
    _graph_targets(systems, _get(d3, "graphs") or {}, check)
    scaling = (results.get("scaling") or {}).get("distributed3") or {}
    for size in _scaling_sizes(results):
        rates = {n: _get(r, "map", str(size)) for n, r in scaling.items()}
        if not all(rates.values()):
            continue
        smallest = min(rates, key=int)
        for n, rate in rates.items():
            check(f"{size:,} map, {n} workers: tasks/s / with {smallest} (flat or rising: >= 0.9)",
                  _ratio(rate, rates[smallest]), lambda r: r >= 0.9)
    return out


def _apart_targets(results, check):
    """A pool on a ``dcenter`` (the ``distributed3-dcenter`` system): the round trip, and
    one task per message against multiprocessing, as for ``Pool()``."""
    apart = results["systems"].get("distributed3-dcenter")
    if apart is None:
        return
    check("round trip, a pool on a dcenter: / raw tornado ping-pong (<= 2)",
          _ratio(_get(apart, "roundtrip_us"), results["raw"].get("ping_pong_us")),
          lambda r: r <= 2)  # fmt: skip
    for n in results["config"]["map"]:
        mp1 = _get(results["systems"], "multiprocessing", "map1", str(n))
        check(f"{n:,} map, 1 task/message, a pool on a dcenter: / multiprocessing "
              "chunksize=1 (>= 1)", _ratio(_get(apart, "map1", str(n)), mp1), lambda r: r >= 1)


def _map_targets(systems, sizes, check):
    """The maps' targets: tasks/s against dask.distributed and multiprocessing, for one map
    call, one task per message, a submit loop and imap."""
    d3 = systems.get("distributed3", {})
    dask_rate = None
    for n in sizes:
        n_ = str(n)
        ours = _get(d3, "map", n_)
        # dask runs the smaller map only; its rate per task does not grow with n
        dask_rate = _get(systems, "dask", "map1", n_) or dask_rate
        check(f"{n:,} map: distributed3 / dask (>= 50)", _ratio(ours, dask_rate),
              lambda r: r >= 50)  # fmt: skip
        mp1 = _get(systems, "multiprocessing", "map1", n_)
        check(f"{n:,} map: / multiprocessing chunksize=1 (>= 1.5)", _ratio(ours, mp1),
              lambda r: r >= 1.5)  # fmt: skip
        check(f"{n:,} map: / multiprocessing default chunks (stretch >= 0.25)",
              _ratio(ours, _get(systems, "multiprocessing", "map", n_)), lambda r: r >= 0.25)
        check(f"{n:,} map, 1 task/message: / multiprocessing chunksize=1 (>= 1)",
              _ratio(_get(d3, "map1", n_), mp1), lambda r: r >= 1)  # fmt: skip
        for workload, peer in (("submits", "apply_async"), ("imap", "imap")):
            check(f"{n:,} {workload}: / multiprocessing {peer} (>= 1)",
                  _ratio(_get(d3, workload, n_), _get(systems, "multiprocessing", workload, n_)),
                  lambda r: r >= 1)  # fmt: skip


def _graph_targets(systems, graphs, check):
    """The task graphs' targets: tree tasks/s against dask.distributed, and the data-heavy
    graphs no slower than it."""
    dask_rate = None
    for label in sorted((k for k in graphs if k.startswith("tree ")), key=lambda k: int(k[5:])):
        # dask runs the smaller tree only; its rate per task does not grow with the tree
        dask_rate = _get(systems, "dask", "graphs", label, "tasks_per_s") or dask_rate
        check(f"graph, {label} tasks: tasks/s / dask.distributed (>= 10)",
              _ratio(_get(graphs, label, "tasks_per_s"), dask_rate), lambda r: r >= 10)
    for field in ("mean", "matmul"):
        check(f"graph, {field}: dask.distributed's time / ours (no slower: >= 1)",
              _ratio(_get(systems, "dask", "graphs", field, "seconds"),
                     _get(graphs, field, "seconds")),
              lambda r: r >= 1)  # fmt: skip


def _scaling_sizes(results):
    """The map sizes the scaling runs timed, smallest first."""
    sizes = set()
    for runs in (results.get("scaling") or {}).values():
        for r in runs.values():
            sizes.update(int(size) for size in (r.get("map") or {}))
    return sorted(sizes)


def print_report(results, file=sys.stdout):
    rows, columns = measurements(results)
    print("\nMedians (2 workers x 1 core each; higher is better except us, s, MB and bytes)",
          file=file)  # fmt: skip
    print(table(rows, columns), file=file)
    for name, why in results["skipped"].items():
        print(f"skipped {name}: {why}", file=file)
    for name, r in results["systems"].items():
        if "error" in r:
            print(f"{name} failed: {r['error']}", file=file)
        elif "error" in (_get(r, "pipeline") or {}):
            print(f"{name}'s data pipeline failed: {r['pipeline']['error']}", file=file)
    if any(_get(r, "pipeline") for r in results["systems"].values()):
        what, prows = pipeline_rows(results)
        print("\n" + textwrap.fill(what, 92), file=file)
        print(table(prows, list(results["systems"])), file=file)
    what, grows = graph_rows(results)
    if grows and any(values for _, values in grows):
        print("\n" + textwrap.fill(what, 92), file=file)
        print(table(grows, [s for s, r in results["systems"].items() if _get(r, "graphs")]),
              file=file)  # fmt: skip
        for name, r in results["systems"].items():
            if "error" in (_get(r, "graphs") or {}):
                print(f"{name}'s task graphs failed: {r['graphs']['error']}", file=file)
    if results.get("scaling"):
        print("\nN workers: no-op maps (map + gather, each system's own chunks), and four 50 ms "
              "tasks per worker (makespan / ideal)", file=file)  # fmt: skip
        labels = {size: f"{size:,} tasks/s" for size in _scaling_sizes(results)}
        srows = [(f"{name}, {n} workers",
                  {**{label: _get(r, "map", str(size)) for size, label in labels.items()},
                   "50 ms tasks": _get(r, "spread"),
                   "center msgs/task": _get(r, "center_messages_per_task")})
                 for name, runs in results["scaling"].items()
                 for n, r in runs.items()]  # fmt: skip
        print(table(srows, [*labels.values(), "50 ms tasks", "center msgs/task"]), file=file)
    print("\nTargets (ratios from this run)", file=file)
    trows = [(label, {"ratio": value, "met": met}) for label, value, met in targets(results)]
    print(table(trows, ["ratio", "met"]), file=file)
