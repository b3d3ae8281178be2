"""The benchmark scripts run and print their tables (speed is not judged here)."""
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

pytestmark = pytest.mark.slow


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    yield
    for name in ("bench_map", "bench_features"):
        sys.modules.pop(name, None)


def test_bench_map(bench, capsys):
    import bench_map

    rows = bench_map.run(n=200, repeat=1)
    bench_map.print_table(rows)
    assert [r[0] for r in rows][0] == "distributed3 map+gather"
    assert all(rate > 0 for _, _, rate in rows)
    assert "multiprocessing chunksize=1" in capsys.readouterr().out


def test_bench_features(bench, capsys):
    import bench_features

    bench_features.main(n=300, repeat=1)
    out = capsys.readouterr().out
    assert "chunksize=100 is" in out and "sent once per worker" in out
