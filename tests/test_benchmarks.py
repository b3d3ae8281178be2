"""The benchmark scripts run and print their tables (speed is not judged here)."""
import io
import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

pytestmark = pytest.mark.slow


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    yield
    for name in ("bench_features",):
        sys.modules.pop(name, None)


@pytest.mark.timeout(240)
def test_quick_benchmark_runs_and_prints_its_tables(tmp_path):
    """What CI runs of the peer benchmark: it works and reports, whatever the speeds."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--json", str(out),
         "--systems", "distributed3,distributed3-dcenter,multiprocessing,concurrent.futures,"
         "dask-threads"],
        capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("no-op map+gather, own chunks", "tiny task round trip", "worker to worker",
                 "local cluster up + first result", "idle worker RSS", "Data pipeline: 8 arrays",
                 "peak summed worker RSS", "tree of 2,000 no-op tasks", "Targets"):  # fmt: skip
        assert line in proc.stdout
    results = json.loads(out.read_text())
    ours = results["systems"]["distributed3"]
    assert "error" not in ours and "error" not in results["systems"]["multiprocessing"]
    assert ours["map"]["2000"] > 0 and ours["roundtrip_us"] > 0
    assert ours["transfer"]["10000000"] > 0 and ours["worker_rss_mb"] > 0
    assert ours["moved_bytes"] == 0  # locality is a property, not a speed
    assert results["startup"]["distributed3"] > 0 and results["raw"]["ping_pong_us"] > 0
    apart = results["systems"]["distributed3-dcenter"]  # a pool on a dcenter: those paths only
    assert apart["roundtrip_us"] > 0 and apart["map1"]["2000"] > 0 and "pipeline" not in apart
    assert "round trip, a pool on a dcenter" in proc.stdout
    for name in ("distributed3", "multiprocessing", "concurrent.futures"):
        assert results["systems"][name]["pipeline"]["makespan"] > 0
    for name in ("distributed3", "dask-threads"):  # answers checked, or no figures
        graphs = results["systems"][name]["graphs"]
        assert graphs["tree 2000"]["tasks_per_s"] > 0 and graphs["matmul"]["seconds"] > 0
        assert graphs["mean"]["peak_worker_mb"] > 0


@pytest.mark.timeout(60)
def test_pipeline_reports_its_measures_for_each_system():
    """The quick data pipeline in fresh interpreters, as the benchmark runs it: a checked
    result, and measures that make sense for the system."""
    from distributed3.bench.main import QUICK, run_system
    from distributed3.bench.report import print_report

    spec = QUICK["pipeline"]
    one_generation = spec["arrays"] * spec["elements"] * 8
    config = {"map": [], "transfer": [], "pipeline": spec}
    systems = {name: run_system(name, config, timeout=50)
               for name in ("distributed3", "multiprocessing")}  # fmt: skip
    ours, mp = systems["distributed3"]["pipeline"], systems["multiprocessing"]["pipeline"]
    for run in (ours, mp):
        assert "error" not in run, run
        assert run["makespan"] > 0 and run["peak_worker_mb"] > 0 and run["peak_parent_mb"] > 0
    # the reduction pulls the other worker's arrays, and nothing else moves
    assert 0 <= ours["moved_bytes"] <= one_generation
    assert one_generation <= ours["parent_bytes"] < one_generation * 1.01  # inputs, 3 floats
    # out, back, out, back, out: every generation through the parent's pipes
    assert "moved_bytes" not in mp and mp["parent_bytes"] >= 5 * one_generation
    out = io.StringIO()
    print_report({"config": config, "systems": systems, "skipped": {}, "raw": {},
                  "startup": {}}, file=out)  # fmt: skip
    report = out.getvalue()
    assert "Data pipeline: 8 arrays of 1 MB" in report and "peak summed worker RSS" in report


def test_bench_features(bench, capsys):
    import bench_features

    bench_features.main(n=300, repeat=1)
    out = capsys.readouterr().out
    assert "chunksize=100 is" in out and "sent once per worker" in out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scale_benchmark_measures_a_center_against_simulated_workers():
    from distributed3.bench import scale

    results = scale.run(workers=(5, 40), npools=2, quick=True, log=lambda s: None)
    for n in (5, 40):
        figures = results[n]
        assert set(scale.COLUMNS) <= set(figures), sorted(figures)
        assert figures["map"] > 0 and figures["map1"] > 0 and figures["tree"] > 0
        assert 0 < figures["join ms"] < 5_000 and 0 < figures["loss ms"] < 5_000
        assert figures["center KB/worker"] is not None  # RSS: noisy at a few workers
    out = io.StringIO()
    scale.print_report(results, 2, file=out)
    assert "40 workers" in out.getvalue() and "map1: 40 workers / 5 workers" in out.getvalue()


@pytest.mark.timeout(300)
def test_deploy_benchmark_runs_on_real_engines():
    """benchmarks/deploy.py on the real Slurm and sshd it starts (dask's side where
    installed): a row for each, whatever the speeds."""
    import engines

    reason = engines.slurm_unavailable() or engines.sshd_unavailable()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "deploy.py")],
                          capture_output=True, text=True, timeout=280)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| S")]
    assert [r.split("|")[1:3] for r in rows][:1] == [[" Slurm ", " distributed3 "]]
    assert any(r.split("|")[1:3] == [" SSH ", " distributed3 "] for r in rows)
    for row in rows:
        work = float(row.split("|")[4])
        assert work >= 0.99  # a makespan over its ideal: measured, not made up
