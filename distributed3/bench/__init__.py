"""distributed3 against its peers on the same work, in one run: medians and ratios.

Run ``python -m distributed3.bench`` (or ``python benchmarks/run.py``); ``--quick``
for a run under a minute that only shows the benchmark works (CI runs it; the
figures of so short a run mean little).  Every system gets a local cluster of
2 workers x 1 core on this machine:

* distributed3, multiprocessing and concurrent.futures always; dask and ray when
  installed (``pip install 'distributed3[bench]'``), else skipped with a note;
* distributed3-dcenter: a pool on a ``dcenter`` and ``dworker`` processes started
  apart, as deployed -- one task per message and the round trip only;
* each system runs in a fresh interpreter of its own (:mod:`distributed3.bench.one`),
  so nothing one leaves behind touches the next;
* the raw limits run here too: tornado ping-pong and a loopback socket
  (:mod:`distributed3.bench.raw`);
* distributed3's own modules are byte-compiled first, as installing a package leaves
  them (the peers' are, in site-packages): a checkout run with
  ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile them from source in every
  new interpreter, which the start-up figure would show.

Absolute figures drift on shared machines; compare the ratios, which come from
one run.  ``--scaling 16,32,64`` runs the run's maps (10,000 and 100,000 no-op
tasks) and four 50 ms tasks per worker over that many workers, for distributed3,
multiprocessing and dask (give it as many cores), with distributed3's center
messages per task.  ``python -m distributed3.bench.scale`` measures one center
against up to thousands of simulated workers (:mod:`distributed3.bench.scale`).
"""

__all__ = ["main"]


def main(argv=None):
    """Run the benchmark and print its tables (imports what it needs only when called, so
    that importing :mod:`distributed3.bench.tasks` on a worker stays cheap)."""
    from .main import main as _main

    return _main(argv)
