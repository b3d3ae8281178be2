"""What the dashboard's pages show, as JSON-ready dicts, from the center's state and its
:class:`~distributed3.center.telemetry.TelemetryStore`.

>>> from distributed3.center import Center
>>> doc = snapshot(Center(telemetry=True), after=0)
>>> doc["totals"]["workers"], doc["tasks"], len(doc["throughput"])
(0, [], 61)
"""
import time

from ..utils import format_address

THROUGHPUT_SECONDS = 60  # of history in each snapshot (the page keeps more as it runs)


def worker_row(center, address):
    """One worker as the cluster page lists it."""
    gauges = center.telemetry.gauges.get(address, {}) if center.telemetry else {}
    ncores = center.ncores.get(address, 0)
    active = gauges.get("active", 0)
    return {
        "address": format_address(address),
        "name": center.names.get(address),
        "ncores": ncores,
        "running": min(active, ncores),
        "queued": max(active - ncores, 0),
        "tasks_done": gauges.get("tasks_done", 0),
        "cpu": gauges.get("cpu"),
        "rss": gauges.get("rss"),
        "memory_limit": gauges.get("memory_limit"),
        "spilled_bytes": gauges.get("spilled_bytes", 0),
        "paused": gauges.get("paused", False),
        "nkeys": len(center.has_what.get(address, ())),
        "nbytes": center.held_bytes.get(address, 0),
        "peer_bytes_in": gauges.get("peer_bytes_in", 0),
        "bytes_served": gauges.get("bytes_served", 0),
        "reported": gauges.get("time"),
    }


def snapshot(center, after=0):
    """The cluster now, and the task and transfer records numbered after ``after``."""
    workers = [worker_row(center, w) for w in sorted(center.ncores)]
    store = center.telemetry
    tasks = store.tasks_after(after) if store else []
    transfers = store.transfers_after(after) if store else []
    throughput = store.throughput(THROUGHPUT_SECONDS) if store else []
    return {
        "time": time.time(),
        "center": format_address(center.address) if center.address else None,
        "workers": workers,
        "totals": {
            "workers": len(workers),
            "cores": sum(w["ncores"] for w in workers),
            "running": sum(w["running"] for w in workers),
            "queued": sum(w["queued"] for w in workers),
            "tasks_done": sum(w["tasks_done"] for w in workers),
            "nkeys": len(center.who_has),
            "nbytes": sum(w["nbytes"] for w in workers),
            "clients": len(center.subscribed),
        },
        "tasks": [[format_address(w), start, stop, name, thread, failed]
                  for _, w, start, stop, name, thread, failed in tasks],
        "transfers": [[format_address(w), start, stop, nbytes, nkeys]
                      for _, w, start, stop, nbytes, nkeys in transfers],
        "throughput": throughput,
        "last": store.count if store else 0,
    }


def worker_page(center, address):
    """A worker's page: its row, recent log lines and errors (also for one that left)."""
    store = center.telemetry
    return {
        "worker": worker_row(center, address) if address in center.ncores else None,
        "address": format_address(address),
        "log": list(store.logs.get(address, ())) if store else [],
        "errors": list(store.errors.get(address, ())) if store else [],
        "deaths": [dict(d, address=format_address(address))
                   for d in center.deaths if d.get("address") == address],
    }
