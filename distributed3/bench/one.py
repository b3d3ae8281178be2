"""Run the workloads for one system in this (fresh) process; print one JSON line.

``python -m distributed3.bench.one SYSTEM '{"map": [10000], ...}'`` -- used by
:mod:`distributed3.bench`, which starts one such process per system so that
nothing one system leaves behind (threads, processes, imports) touches the next.
"""
import gc
import json
import os
import statistics
import sys
import time

from .graphs import graph_spec, run_graphs
from .memory import descendants, rss_mb
from .pipeline import pipeline_spec, run_pipeline
from .systems import SYSTEMS
from .tasks import MAKESPAN, ideal_makespan
from .timing import median_of


def _timed(func, n, repeat):
    """Median seconds of ``func(n)`` (see :func:`~distributed3.bench.timing.median_of`)."""

    def measure():
        start = time.perf_counter()
        func(n)
        return time.perf_counter() - start

    return median_of(measure, repeat)


def idle_memory(s):
    """Median resident MB of an idle worker, and of the whole cluster with this process."""
    gc.collect()
    time.sleep(0.5)  # let start-up work settle: this is the idle size
    workers = s.worker_pids()
    return {"worker_rss_mb": statistics.median(rss_mb(p) for p in workers),
            "cluster_rss_mb": rss_mb(os.getpid()) + sum(
                rss_mb(p) for p in descendants(os.getpid()))}  # fmt: skip


def real_work(s, config):
    """Tasks that take time: each ``MAKESPAN`` case's seconds (``makespan``), and four
    50 ms tasks per worker against the ideal (``spread``), as ``config`` asks."""
    out = {}
    if config.get("makespan"):
        out["makespan"] = {}
        for label, lengths in MAKESPAN.items():
            start = time.perf_counter()
            s.sleeps(lengths)
            out["makespan"][label] = time.perf_counter() - start
    if config.get("spread"):
        lengths = [0.05] * (4 * config["workers"])
        start = time.perf_counter()
        s.sleeps(lengths)
        out["spread"] = (time.perf_counter() - start) / ideal_makespan(
            lengths, cores=config["workers"])
    return out


def run(name, config):
    """``{workload: result}`` for system ``name``; see :mod:`distributed3.bench`."""
    repeat = config.get("repeat", 3)
    results = {}
    system = SYSTEMS[name](config["workers"]) if "workers" in config else SYSTEMS[name]()
    with system as s:
        if config.get("memory") and hasattr(s, "worker_pids"):
            results.update(idle_memory(s))
        # the round trip first, on a quiet cluster: after a big map a system may still be
        # releasing its results for a second or so, which this small figure would show
        if config.get("roundtrip") and hasattr(s, "roundtrip_once"):
            n = config["roundtrip"]
            for _ in range(min(n, 100)):
                s.roundtrip_once()
            def in_a_row(n):
                for _ in range(n):
                    s.roundtrip_once()

            results["roundtrip_us"] = _timed(in_a_row, n, repeat) / n * 1e6
        for key in ("map", "map1", "submits", "imap"):
            func = getattr(s, key, None)
            if func is not None:
                results[key] = {str(n): n / _timed(func, n, repeat) for n in config.get("map", ())}
        if getattr(s, "transfer", None) is not None:
            results["transfer"] = {str(size): s.transfer(size, repeat)
                                   for size in config.get("transfer", ())}  # fmt: skip
        if config.get("locality") and getattr(s, "moved_bytes", None) is not None:
            results["moved_bytes"] = s.moved_bytes()
        if getattr(s, "sleeps", None) is not None:
            results.update(real_work(s, config))
        if config.get("messages") and getattr(s, "center_messages", None) is not None:
            n = config["messages"]
            before = s.center_messages()
            s.map(n)
            results["center_messages_per_task"] = (s.center_messages() - before) / n
        if config.get("graphs") and getattr(s, "graph_get", None) is not None:
            pids = getattr(s, "graph_pids", None) or s.worker_pids
            try:
                results["graphs"] = run_graphs(s.graph_get, graph_spec(config["graphs"]), pids,
                                               config.get("graph_caps"))  # fmt: skip
            except Exception as e:  # a wrong answer or a failure: no figures, the rest kept
                results["graphs"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        # last: the biggest memory of the run, which the figures above should not see
        if config.get("pipeline") and getattr(s, "pipeline", None) is not None:
            try:
                results["pipeline"] = run_pipeline(s, pipeline_spec(config["pipeline"]))
            except Exception as e:  # a wrong result or a failure: no figures, the rest kept
                results["pipeline"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return results


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], json.loads(sys.argv[2]))), flush=True)
