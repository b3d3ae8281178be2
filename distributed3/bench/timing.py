"""Medians that one hiccup cannot decide.

On a shared VM a run of a few milliseconds is sometimes stalled by another
process, a page-fault storm or a collection; with a median of three, two such
runs decide the figure.  Every timed workload goes through :func:`median_of`:
at least ``repeat`` runs, and more for quick ones until ``min_seconds`` passed.
"""
import statistics
import time

__all__ = ["median_of"]


def median_of(measure, repeat, min_seconds=0.5, most=50):
    """Median of ``measure()`` -- seconds, timed by ``measure`` itself, so that it can
    leave its setup and clean-up untimed: ``repeat`` calls, or more (up to ``most``)
    until ``min_seconds`` have passed.

    >>> median_of(lambda: 1.0, 3, min_seconds=0)
    1.0
    """
    times = []
    began = time.perf_counter()
    while len(times) < repeat or (len(times) < most
                                  and time.perf_counter() - began < min_seconds):  # fmt: skip
        times.append(measure())
    return statistics.median(times)
