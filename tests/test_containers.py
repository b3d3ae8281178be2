"""The container image, compose file and Kubernetes manifests agree with the executables.

Each command line in ``containers/`` goes through the real ``entrypoint.sh`` (with
``DISTRIBUTED3_DRY_RUN=1`` it prints the ``dcenter``/``dworker`` command it would run)
and then through the real argparse parsers, so a renamed option breaks a test here, not
a deployment.  The probes, ports, center address and secret mount are checked against
the options each container gets.  The end-to-end test runs ``entrypoint.sh`` as local
processes on loopback (no Docker here).
"""
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request

import pytest
import yaml

from distributed3 import Pool
from distributed3.deploy.cli import _center_parser
from distributed3.deploy.worker_cli import _worker_parser
from distributed3.testing import BIN, Proc
from distributed3.worker.store import parse_memory_limit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTAINERS = os.path.join(ROOT, "containers")
ENTRYPOINT = os.path.join(CONTAINERS, "entrypoint.sh")
COMPOSE = os.path.join(CONTAINERS, "docker-compose.yml")
KUBERNETES = os.path.join(CONTAINERS, "kubernetes")
MANIFESTS = sorted(os.path.join(KUBERNETES, f) for f in os.listdir(KUBERNETES))
POD_IP = "10.1.2.3"  # this container's address, as `hostname -i` or the downward API says
FAKE_BIN = None  # a directory with a `hostname` that answers as one in a container would


@pytest.fixture(scope="module", autouse=True)
def fake_hostname(tmp_path_factory):
    """``hostname -i``: a dual-stack pod's addresses (the entrypoint picks the IPv4 one)."""
    global FAKE_BIN
    FAKE_BIN = tmp_path_factory.mktemp("bin")
    script = FAKE_BIN / "hostname"
    answer = f'[ "${{1:-}}" = -i ] && echo "fd00::3 {POD_IP}" || echo worker-7'
    script.write_text(f"#!/bin/sh\n{answer}\n")
    script.chmod(0o755)
    yield
    FAKE_BIN = None


def read(path):
    with open(path) as f:
        return f.read()


def load_all(path):
    return [doc for doc in yaml.safe_load_all(read(path)) if doc]


def kube_objects(kind):
    return [d for path in MANIFESTS for d in load_all(path) if d["kind"] == kind]


def entrypoint(args, env=None):
    """``entrypoint.sh ARGS`` in this environment (plus, unless ``env`` says otherwise, a
    secret), as in a container whose IP is ``POD_IP``: ``CompletedProcess``, text output."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED3_")}
    full.update(PATH=f"{FAKE_BIN}{os.pathsep}{full['PATH']}",
                DISTRIBUTED3_SECRET="not-a-real-secret",
                DISTRIBUTED3_SECRET_FILE=os.path.join(ROOT, "no-such-secret-file"))
    full.update(env or {})
    return subprocess.run([ENTRYPOINT, *args], env={k: v for k, v in full.items() if v},
                          capture_output=True, text=True, timeout=10)  # fmt: skip


def command_of(args, env=None):
    """``(program, parsed options)``: what ``entrypoint.sh ARGS`` would run, parsed by
    the real parser of that program (argparse errors fail the test with their message)."""
    done = entrypoint(args, dict(env or {}, DISTRIBUTED3_DRY_RUN="1"))
    assert done.returncode == 0, f"entrypoint.sh {shlex.join(args)}: {done.stderr}"
    program, *argv = done.stdout.splitlines()
    parser = {"dcenter": _center_parser, "dworker": _worker_parser}[program]()
    parser.allow_abbrev = False  # an option renamed to a longer name must not still match
    try:
        return program, parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{program} rejects {shlex.join(argv)} (from entrypoint.sh "
                    f"{shlex.join(args)}): {parser.format_usage()}")  # fmt: skip


def container_env(container):
    """A Kubernetes container's environment; downward-API values as a pod would see them."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, var
            env[var["name"]] = POD_IP
    return env


def pods():
    """``[(deployment name, pod spec)]`` of the manifests."""
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in kube_objects("Deployment")]  # fmt: skip


def kube_containers():
    """``[(deployment, pod spec, container, program, options)]``."""
    out = []
    for name, pod in pods():
        for c in pod["containers"]:
            assert "command" not in c, f"{name}: not the image's entrypoint: {c['command']}"
            program, opts = command_of(c["args"], container_env(c))
            out.append((name, pod, c, program, opts))
    return out


def compose():
    return yaml.safe_load(read(COMPOSE))


def compose_services():
    """``{service: (its definition, program, options)}``."""
    doc = compose()
    return {name: (s, *command_of(s["command"], s.get("environment")))
            for name, s in doc["services"].items()}  # fmt: skip


def entrypoint_secret_path():
    m = re.search(r"DISTRIBUTED3_SECRET_FILE:-([^}]+)\}", read(ENTRYPOINT))
    assert m, "entrypoint.sh no longer says where it looks for the secret file"
    return m.group(1)


def dockerfile():
    """``{instruction: [its arguments, ...]}`` of the Dockerfile (continued lines joined)."""
    text = re.sub(r"\\\n", " ", read(os.path.join(CONTAINERS, "Dockerfile")))
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def cpu_cores(quantity):
    """Cores in a Kubernetes CPU quantity.

    >>> cpu_cores("2"), cpu_cores("500m")
    (2.0, 0.5)
    """
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def memory_bytes(quantity):
    """Bytes in a Kubernetes memory quantity.

    >>> memory_bytes("4Gi"), memory_bytes("512M")
    (4294967296, 512000000)
    """
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}  # fmt: skip
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    return int(float(m.group(1)) * units.get(m.group(2), 1))


# -- the files parse, and their commands parse ------------------------------------------


@pytest.mark.timeout(30)
def test_every_file_parses_and_every_command_line_parses():
    assert set(compose()["services"]) == {"center", "worker"}
    assert {d["kind"] for path in MANIFESTS for d in load_all(path)} == {
        "Secret", "Deployment", "Service"}  # fmt: skip
    roles = [program for *_, program, _ in kube_containers()]
    roles += [program for _, program, _ in compose_services().values()]
    assert sorted(roles) == ["dcenter", "dcenter", "dworker", "dworker"]


@pytest.mark.timeout(30)
def test_the_entrypoint_defaults_are_the_container_ones_and_user_options_win():
    _, center = command_of(["center"])
    assert (center.host, center.port, http_port(center)) == ("0.0.0.0", 8787, 8790)
    _, worker = command_of(["worker"])
    assert (worker.center, worker.host, worker.port, http_port(worker)) == (
        "center:8787", POD_IP, 8788, 8791)  # fmt: skip
    assert (worker.center_wait, worker.death_timeout) == (60, 60)
    _, worker = command_of(["worker", "--port", "9000", "--death-timeout", "5"],
                           {"DISTRIBUTED3_CENTER": "c:1"})  # fmt: skip
    assert (worker.center, worker.port, worker.death_timeout) == ("c:1", 9000, 5)


@pytest.mark.timeout(30)
def test_the_entrypoint_refuses_to_start_without_a_secret(tmp_path):
    for role in ("center", "worker"):
        done = entrypoint([role], {"DISTRIBUTED3_SECRET": ""})
        assert done.returncode != 0
        assert "no secret" in done.stderr and "DISTRIBUTED3_SECRET" in done.stderr
        assert done.stdout == ""  # nothing was started
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    _, center = command_of(["center"], {"DISTRIBUTED3_SECRET": "",
                                        "DISTRIBUTED3_SECRET_FILE": str(secret)})  # fmt: skip
    assert center.secret_file == str(secret)
    assert entrypoint(["nonsense"]).returncode != 0


def http_port(opts):
    """The port a container's probes ask: the center's dashboard, a worker's health."""
    return opts.dashboard_port if hasattr(opts, "dashboard_port") else opts.http_port


# -- compose ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_compose_probes_ports_center_address_and_secret():
    doc = compose()
    services = compose_services()
    script = entrypoint_path_in_image()
    for name, (service, program, opts) in services.items():
        assert service["healthcheck"]["test"] == ["CMD", script, "ready", str(http_port(opts))], (
            f"{name}'s healthcheck must ask /ready on its HTTP port {http_port(opts)}")
        # the secret, where the entrypoint looks for it
        [secret] = service["secrets"]
        target = secret if isinstance(secret, str) else secret.get("target", secret["source"])
        assert f"/run/secrets/{target}" == entrypoint_secret_path()
        assert "file" in doc["secrets"][secret if isinstance(secret, str) else secret["source"]]
        assert "DISTRIBUTED3_SECRET" not in service.get("environment", {})
    center, _, copts = services["center"]
    assert all(p.startswith("127.0.0.1:") for p in center["ports"]), "published beyond loopback"
    assert f"127.0.0.1:{copts.port}:{copts.port}" in center["ports"]
    worker, _, wopts = services["worker"]
    host, port = wopts.center.rsplit(":", 1)
    assert (host, int(port)) == ("center", copts.port)
    # scalable: nothing that two copies of it would fight over
    assert "container_name" not in worker and "ports" not in worker
    assert worker["depends_on"]["center"]["condition"] == "service_healthy"


# -- Kubernetes --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_kubernetes_probes_ports_and_center_address():
    [center_service] = kube_objects("Service")
    service_ports = {p["port"] for p in center_service["spec"]["ports"]}
    roles = {}
    for name, pod, c, program, opts in kube_containers():
        roles[program] = (pod, opts)
        http = http_port(opts)
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": http}, name
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": http}, name
        assert {p["containerPort"] for p in c["ports"]} == {opts.port, http}, name
        # Service links would set DISTRIBUTED3_CENTER_PORT=tcp://..., read as --port
        assert pod.get("enableServiceLinks") is False, name
    pod, copts = roles["dcenter"]
    labels = center_service["spec"]["selector"]
    assert labels.items() <= pod_labels("dcenter").items()
    assert {copts.port, http_port(copts)} <= service_ports
    _, wopts = roles["dworker"]
    host, port = wopts.center.rsplit(":", 1)
    assert (host, int(port)) == (center_service["metadata"]["name"], copts.port)
    assert wopts.host == POD_IP  # listens on, and tells the center, the pod's address


def pod_labels(program):
    for d in kube_objects("Deployment"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        if command_of(c["args"], container_env(c))[0] == program:
            return d["spec"]["template"]["metadata"]["labels"]
    raise AssertionError(f"no Deployment runs {program}")


@pytest.mark.timeout(30)
def test_kubernetes_secret_is_mounted_where_the_entrypoint_reads_it():
    [secret] = kube_objects("Secret")
    for name, pod, c, _, _ in kube_containers():
        volumes = {v["name"]: v for v in pod["volumes"]}
        [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == entrypoint_secret_path()]
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret["metadata"]["name"], name
        assert mount["subPath"] in secret["stringData"], name
        assert mount.get("readOnly") is True, name


@pytest.mark.timeout(30)
def test_kubernetes_worker_options_match_its_resources():
    [(_, _, c, _, opts)] = [k for k in kube_containers() if k[3] == "dworker"]
    limits = c["resources"]["limits"]
    assert opts.ncores == cpu_cores(limits["cpu"])
    assert parse_memory_limit(opts.memory_limit) == memory_bytes(limits["memory"])


# -- the image -------------------------------------------------------------------------


def entrypoint_path_in_image():
    """Where the Dockerfile puts ``containers/entrypoint.sh``."""
    for args in dockerfile()["COPY"]:
        *sources, dest = args.split()
        if sources == ["containers/entrypoint.sh"]:
            return dest
    raise AssertionError("the Dockerfile does not copy containers/entrypoint.sh")


@pytest.mark.timeout(30)
def test_dockerfile_runs_the_entrypoint_and_exposes_the_ports_used():
    instructions = dockerfile()
    [entry] = instructions["ENTRYPOINT"]
    assert json.loads(entry)[-1] == entrypoint_path_in_image()
    exposed = {int(p.split("/")[0]) for args in instructions["EXPOSE"] for p in args.split()}
    used = set()
    for *_, opts in kube_containers():
        used |= {opts.port, http_port(opts)}
    for _, _, opts in compose_services().values():
        used |= {opts.port, http_port(opts)}
    assert used <= exposed, f"ports used but not exposed: {sorted(used - exposed)}"
    assert instructions["USER"] and instructions["USER"][-1].split(":")[0] != "0"
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.mark.timeout(30)
def test_dockerignore_lets_through_what_the_dockerfile_copies():
    allowed = {line[1:] for line in read(os.path.join(ROOT, ".dockerignore")).splitlines()
               if line.startswith("!")}  # fmt: skip
    for args in dockerfile()["COPY"]:
        *sources, _ = args.split()
        for source in sources:
            assert source in allowed, f"{source} is copied but .dockerignore leaves it out"
            assert os.path.exists(os.path.join(ROOT, source)), source


# -- end to end, as local processes ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_entrypoint_runs_a_cluster_that_a_pool_uses(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a-secret-for-this-test\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED3_")}
    # bin/ first: the entrypoint runs `dcenter`/`dworker` from PATH, as in the image
    env.update(PATH=os.pathsep.join([BIN, os.path.dirname(sys.executable), env["PATH"]]),
               DISTRIBUTED3_HOST="127.0.0.1", DISTRIBUTED3_SECRET_FILE=str(secret),
               DISTRIBUTED3_SECRET="")  # the file, not a variable of this process  # fmt: skip
    ports = ["--port", "0", "--http-port", "0"]  # user options come last, and win
    with Proc([ENTRYPOINT, "center", "--port", "0", "--dashboard-port", "0"], env=env) as center:
        address = center.wait_for_line(r"Started center at (127\.0\.0\.1:\d+)").group(1)
        cport = center.wait_for_line(r"Dashboard at http://127\.0\.0\.1:(\d+)").group(1)
        wenv = dict(env, DISTRIBUTED3_CENTER=address)
        with Proc([ENTRYPOINT, "worker", *ports, "--ncores", "2"], env=wenv) as worker:
            worker.wait_for_line(rf"Register with center at {address}")
            wport = worker.wait_for_line(r"Health endpoint at http://127\.0\.0\.1:(\d+)").group(1)
            for port, role in ((cport, "center"), (wport, "worker")):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                    assert (r.status, json.loads(r.read())["role"]) == (200, role)
                ready = entrypoint(["ready", port], {"DISTRIBUTED3_HOST": "127.0.0.1"})
                assert ready.returncode == 0, ready.stderr
            with Pool(address, secret=secret.read_text().strip()) as pool:
                assert pool.gather(pool.map(lambda x: x + 1, range(10))) == list(range(1, 11))
            assert "--secret-file" in worker.output and "a-secret" not in worker.output
    # nothing answers there any more: the healthcheck says so
    gone = entrypoint(["ready", cport], {"DISTRIBUTED3_HOST": "127.0.0.1"})
    assert gone.returncode != 0 and "not ready" in gone.stderr
