"""Prometheus metrics of the cluster, in the standard text format, by ``prometheus_client``
(``pip install 'distributed3[dashboard]'``): a collector that reads the center's state
when ``/metrics`` is scraped, so nothing is counted twice or kept beside it.

::

    distributed3_workers, distributed3_cores, distributed3_clients       gauges
    distributed3_keys, distributed3_bytes_held{worker}                   gauges
    distributed3_tasks{state="running"|"queued"}                         gauge
    distributed3_worker_tasks_done_total{worker}                         counter
    distributed3_worker_peer_bytes_in_total{worker}                      counter
    distributed3_worker_rss_bytes{worker}, ..._cpu_percent{worker}       gauges
    distributed3_task_duration_seconds                                   histogram
"""
from prometheus_client import CollectorRegistry
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)  # fmt: skip
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..center.telemetry import BUCKETS
from .snapshot import worker_row


class CenterCollector:
    """Metric families from ``center`` at each scrape."""

    def __init__(self, center):
        self.center = center

    def collect(self):
        center = self.center
        rows = [worker_row(center, w) for w in sorted(center.ncores)]
        yield GaugeMetricFamily("distributed3_workers", "Workers registered",
                                value=len(rows))  # fmt: skip
        yield GaugeMetricFamily("distributed3_cores", "Cores of the registered workers",
                                value=sum(r["ncores"] for r in rows))  # fmt: skip
        yield GaugeMetricFamily("distributed3_clients", "Pools connected",
                                value=len(center.subscribed))  # fmt: skip
        yield GaugeMetricFamily("distributed3_keys", "Keys the center knows of",
                                value=len(center.who_has))  # fmt: skip
        tasks = GaugeMetricFamily("distributed3_tasks", "Tasks on workers, by state",
                                  labels=["state"])  # fmt: skip
        tasks.add_metric(["running"], sum(r["running"] for r in rows))
        tasks.add_metric(["queued"], sum(r["queued"] for r in rows))
        yield tasks
        yield from self._per_worker(rows)
        yield self._durations()

    def _per_worker(self, rows):
        families = {
            "bytes_held": GaugeMetricFamily("distributed3_bytes_held",
                                            "Bytes of the keys a worker holds", labels=["worker"]),
            "tasks_done": CounterMetricFamily("distributed3_worker_tasks_done",
                                              "Tasks a worker ran", labels=["worker"]),
            "peer_bytes_in": CounterMetricFamily("distributed3_worker_peer_bytes_in",
                                                 "Input bytes a worker fetched from peers",
                                                 labels=["worker"]),
            "rss": GaugeMetricFamily("distributed3_worker_rss_bytes",
                                     "A worker's resident memory", labels=["worker"]),
            "cpu": GaugeMetricFamily("distributed3_worker_cpu_percent",
                                     "A worker's CPU use, per cent of one core",
                                     labels=["worker"]),
        }  # fmt: skip
        for row in rows:
            values = dict(row, bytes_held=row["nbytes"])
            for field, family in families.items():
                if values.get(field) is not None:
                    family.add_metric([row["address"]], values[field])
        yield from families.values()

    def _durations(self):
        store = self.center.telemetry
        counts = store.duration_counts if store else [0] * len(BUCKETS)
        cumulative, buckets = 0, []
        for bound, n in zip(BUCKETS, counts):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        total = store.totals["task_seconds"] if store else 0.0
        return HistogramMetricFamily(
            "distributed3_task_duration_seconds",
            "Seconds a worker took for the tasks of one message", buckets=buckets,
            sum_value=total,
        )  # fmt: skip


def exposition(center):
    """``(body, content type)`` of ``/metrics`` for ``center``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CenterCollector(center))
    return generate_latest(registry), CONTENT_TYPE_LATEST
