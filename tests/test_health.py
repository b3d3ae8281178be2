"""The HTTP health endpoint, and workers that leave once their center is gone."""
import asyncio
import json
import os
import signal
import urllib.error
import urllib.request

import pytest

from distributed3.dashboard.health import start_http
from distributed3.testing import BIN, Proc, cluster, gen_test
from distributed3.utils import wait_for

DCENTER = os.path.join(BIN, "dcenter")
DWORKER = os.path.join(BIN, "dworker")


def get(url):
    """``(status, document)`` of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        is_json = e.headers.get_content_type() == "application/json"
        return e.code, json.loads(body) if is_json else body


async def aget(url):
    return await asyncio.get_running_loop().run_in_executor(None, get, url)


@pytest.mark.timeout(30)
@gen_test()
async def test_center_and_worker_answer_health_and_readiness():
    async with cluster(nworkers=1, ncores=2) as (center, [worker]):
        chttp, cport = start_http(center, "127.0.0.1", 0)
        whttp, wport = start_http(worker, "127.0.0.1", 0)
        try:
            status, doc = await aget(f"http://127.0.0.1:{cport}/ready")
            assert (status, doc["role"], doc["workers"], doc["cores"]) == (200, "center", 1, 2)
            status, doc = await aget(f"http://127.0.0.1:{wport}/ready")
            assert (status, doc["role"], doc["registered"], doc["ncores"]) == (
                200, "worker", True, 2)  # fmt: skip
            assert doc["address"] == "%s:%d" % worker.address
            assert (await aget(f"http://127.0.0.1:{cport}/nothing"))[0] == 404
        finally:
            chttp.stop()
        try:
            await center.close()  # the worker loses its center: alive, but not ready
            await wait_for(lambda: not worker.center_connected, 10, "center still connected")
            status, doc = await aget(f"http://127.0.0.1:{wport}/ready")
            assert (status, doc["status"], doc["registered"]) == (503, "not ready", False)
            status, doc = await aget(f"http://127.0.0.1:{wport}/health")
            assert (status, doc["status"]) == (200, "ok")
        finally:
            whttp.stop()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_workers_leave_after_death_timeout_and_serve_health_meanwhile():
    with Proc([DCENTER, "--port", "0", "--dashboard-port", "0"]) as center:
        address = center.wait_for_line(r"Started center at (127\.0\.0\.1:\d+)").group(1)
        cport = center.wait_for_line(r"Dashboard at http://127\.0\.0\.1:(\d+)").group(1)
        with Proc([DWORKER, address, "--death-timeout", "1", "--http-port", "0"]) as worker, \
             Proc([DWORKER, address, "--no-nanny"]) as stays:  # fmt: skip
            wport = worker.wait_for_line(r"Health endpoint at http://127\.0\.0\.1:(\d+)").group(1)
            worker.wait_for_line(rf"Register with center at {address}")
            stays.wait_for_line(rf"Register with center at {address}")
            assert get(f"http://127.0.0.1:{cport}/ready")[1]["workers"] == 2
            assert get(f"http://127.0.0.1:{wport}/ready")[0] == 200
            center.signal(signal.SIGKILL)
            assert worker.wait(timeout=20) == 0  # worker and its nanny
            worker.wait_for_line(r"No center at .* for 1 s \(--death-timeout\): leaving")
            # without the option a worker keeps trying, as before
            assert stays.proc.poll() is None


@pytest.mark.timeout(60)
def test_a_worker_waiting_for_its_center_answers_health_but_is_not_ready():
    """A Kubernetes liveness probe must not restart a worker pod whose center is slow
    to come up (the image starts workers with --center-wait 60): /health answers at
    once, /ready says 503 until the worker has registered."""
    import socket

    with socket.socket() as s:  # a port with no center yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    with Proc([DWORKER, address, "--center-wait", "30", "--http-port", "0", "--no-nanny"]) as worker:
        wport = worker.wait_for_line(r"Health endpoint at http://127\.0\.0\.1:(\d+)").group(1)
        assert get(f"http://127.0.0.1:{wport}/health")[0] == 200
        status, doc = get(f"http://127.0.0.1:{wport}/ready")
        assert status == 503 and doc["registered"] is False
        with Proc([DCENTER, "--port", str(port), "--no-dashboard"]) as center:
            center.wait_for_line(r"Started center at")
            worker.wait_for_line(rf"Register with center at {address}")
            assert get(f"http://127.0.0.1:{wport}/ready")[0] == 200
