"""Run every workload for every system and print the report; see :mod:`distributed3.bench`."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .raw import loopback_mb_per_s, ping_pong_us
from .report import print_report
from .systems import STARTUP, SYSTEMS, available

# the systems --scaling runs beside distributed3, on as many workers
SCALING_SYSTEMS = ("distributed3", "multiprocessing", "dask")

__all__ = ["main", "run"]

FULL = {"map": [10_000, 100_000], "roundtrip": 1000, "transfer": [100_000_000, 1_000_000_000],
        "locality": True, "memory": True, "makespan": True, "pipeline": True,
        "graphs": True, "repeat": 3}  # fmt: skip
# the pipeline: True is 64 arrays of 8 MB (tasks.PIPELINE); quick, 8 of 1 MB
QUICK = {"map": [2_000], "roundtrip": 200, "transfer": [10_000_000], "locality": True,
         "memory": True, "pipeline": {"arrays": 8, "elements": 125_000}, "graphs": "quick",
         "repeat": 1}  # fmt: skip
# peers this slow per task would take minutes on the big maps: they run the smaller ones
SLOW = {"dask": {"map": 10_000, "transfer": 100_000_000, "tree": 10_000},
        "ray": {"map": 10_000, "tree": 10_000}}  # fmt: skip


# a pool on a dcenter and dworkers started apart: the paths of one task per message and
# the round trip, where the connections are all real; the rest is Pool()'s code and figures
APART = {"distributed3-dcenter": ("map", "roundtrip", "repeat")}


def _config_for(name, config):
    caps = SLOW.get(name, {})
    out = dict(config)
    if name in APART:
        out = {k: v for k, v in out.items() if k in APART[name]}
    for field in ("map", "transfer"):
        if field in caps:
            out[field] = [n for n in config[field] if n <= caps[field]] or config[field][:1]
    if "tree" in caps:
        out["graph_caps"] = {"tree": caps["tree"]}
    return out


def run_system(name, config, timeout):
    """Results of :func:`distributed3.bench.one.run` for ``name``, in a fresh interpreter."""
    cmd = [sys.executable, "-m", "distributed3.bench.one", name, json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit status {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def startup_seconds(name, repeat, timeout=120):
    """Median seconds from starting a new interpreter to its first result, for ``name``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", STARTUP[name]], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        try:
            line = proc.stdout.readline()
            elapsed = time.perf_counter() - start
            proc.wait(timeout)
        finally:
            proc.kill()
            proc.wait()
        if line.strip() != "2":
            return None
        times.append(elapsed)
    return statistics.median(times)


def byte_compile():
    """Byte-compile distributed3's modules where they are, as installing a package does;
    whether each could be.

    >>> byte_compile()
    True
    """
    import compileall

    import distributed3

    return bool(compileall.compile_dir(os.path.dirname(distributed3.__file__), quiet=2))


def run(quick=False, systems=None, scaling=(), repeat=None, log=print):
    """Every workload for every available system; returns the results as a dict."""
    if not byte_compile():
        log("could not byte-compile distributed3's modules: its start-up includes that")
    config = dict(QUICK if quick else FULL)
    if repeat:
        config["repeat"] = repeat
    timeout = 300 if quick else 1800
    names = systems or list(SYSTEMS)
    results = {"config": config, "systems": {}, "skipped": {}, "raw": {}, "startup": {},
               "scaling": {}}  # fmt: skip
    log("raw limits: tornado ping-pong, loopback socket ...")
    results["raw"]["ping_pong_us"] = ping_pong_us(config["roundtrip"], repeat=config["repeat"])
    results["raw"]["ping_pong_polling_us"] = ping_pong_us(config["roundtrip"],
                                                          repeat=config["repeat"], polling=True)
    for size in config["transfer"]:
        results["raw"][f"socket {size}"] = loopback_mb_per_s(size, config["repeat"])
        results["raw"][f"socket fresh {size}"] = loopback_mb_per_s(size, config["repeat"], True)
    for name in names:
        if not available(name):
            results["skipped"][name] = "not installed (pip install 'distributed3[bench]')"
            continue
        log(f"{name} ...")
        results["systems"][name] = run_system(name, _config_for(name, config), timeout)
    for name in ["python", *names]:
        if available(name) and name in STARTUP:
            log(f"start-up of {name} ...")
            results["startup"][name] = startup_seconds(name, config["repeat"])
    for name in [n for n in SCALING_SYSTEMS if n in names and available(n)] if scaling else ():
        for n in scaling:
            log(f"{name} with {n} workers ...")
            run_config = {"workers": n, "map": _config_for(name, config)["map"], "spread": True,
                          "messages": 10_000 if name == "distributed3" else None,
                          "repeat": config["repeat"]}  # fmt: skip
            results["scaling"].setdefault(name, {})[n] = run_system(name, run_config, timeout)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distributed3.bench",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--systems", help="comma-separated subset of: " + ", ".join(SYSTEMS))
    parser.add_argument("--scaling", default=None,
                        help="worker counts to map over, e.g. 16,32,64 (default: 2,4,8 in a "
                             "full run, none with --quick)")  # fmt: skip
    parser.add_argument("--repeat", type=int, help="runs per measurement (median)")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    if args.scaling is None:
        args.scaling = "" if args.quick else "2,4,8"
    systems = args.systems.split(",") if args.systems else None
    unknown = set(systems or ()) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {list(SYSTEMS)}")
    scaling = [int(n) for n in args.scaling.split(",") if n]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{os.cpu_count()} cores; every system: 2 workers x 1 core on this machine")
    results = run(args.quick, systems, scaling, args.repeat, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print_report(results)
    return results
