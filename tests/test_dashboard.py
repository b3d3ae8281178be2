"""The center's dashboard over HTTP (the pages in a real browser: test_dashboard_browser.py):
its token, what its API and /metrics report against the cluster itself, and health."""
import json
import os
import signal
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distributed3 import Pool
from distributed3.core.security import token_for
from distributed3.testing import BIN, Proc
from distributed3.utils import wait_for_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

DCENTER = os.path.join(BIN, "dcenter")


def fetch(url, headers=None):
    """``(status, body text, headers)`` of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def failing(x):
    raise ValueError(f"no good: {x}")


@pytest.fixture(scope="module")
def pool():
    with Pool(n_workers=2) as p:
        yield p


def base(pool):
    return pool.dashboard_link.split("/status")[0]


def test_the_link_carries_the_token_and_pages_need_it(pool):
    link = pool.dashboard_link
    token = token_for(pool.secret)
    assert link.endswith(f"/status?token={token}")
    status, page, headers = fetch(link)
    assert status == 200 and "<title>distributed3</title>" in page
    cookie = headers["Set-Cookie"].split(";")[0]  # the token, for the page's own requests
    for path in ("/status", "/api/snapshot", "/events", "/metrics", "/api/keys?prefix=x"):
        status, body, _ = fetch(base(pool) + path)
        assert status == 403 and "needs its token" in body, path
    assert fetch(base(pool) + "/api/snapshot", {"Cookie": cookie})[0] == 200
    assert fetch(base(pool) + "/api/snapshot?token=wrong")[0] == 403
    bearer = {"Authorization": f"Bearer {token}"}  # how a Prometheus scraper sends it
    assert fetch(base(pool) + "/metrics", bearer)[0] == 200
    for path in ("/health", "/ready"):  # probes need no token, and show no data
        status, body, _ = fetch(base(pool) + path)
        assert status == 200 and json.loads(body)["role"] == "center"


def test_snapshot_and_metrics_match_the_workers_own_counts(pool):
    results = pool.map(lambda x: x * 2, range(500))
    pool.gather(results)
    info = pool.worker_info()
    token = "?token=" + token_for(pool.secret)

    def reported():
        doc = json.loads(fetch(base(pool) + "/api/snapshot" + token)[1])
        return {w["address"]: w["tasks_done"] for w in doc["workers"]}

    expected = {"%s:%d" % w: i["tasks_done"] for w, i in info.items()}
    wait_for_sync(lambda: reported() == expected, 10, f"{reported()} != {expected}")
    body = fetch(base(pool) + "/metrics" + token)[1]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples[("distributed3_workers", ())] == 2
    assert samples[("distributed3_cores", ())] == sum(i["ncores"] for i in info.values())
    for worker, done in expected.items():
        assert samples[("distributed3_worker_tasks_done_total", (("worker", worker),))] == done
    count = samples[("distributed3_task_duration_seconds_count", ())]
    assert count >= 1 and samples[("distributed3_task_duration_seconds_bucket",
                                   (("le", "+Inf"),))] == count  # fmt: skip
    doc = json.loads(fetch(base(pool) + "/api/snapshot" + token)[1])
    assert {t[3] for t in doc["tasks"]} >= {"lambda"}  # the task stream, by function


def test_key_search_finds_where_a_key_lives_and_a_worker_page_its_errors(pool):
    token = "?token=" + token_for(pool.secret)
    [handle] = pool.scatter([b"x" * 5000])
    [holder] = pool.who_has([handle])[handle.key]
    found = json.loads(fetch(base(pool) + f"/api/keys{token}&prefix={handle.key[:6]}")[1])
    [doc] = [k for k in found if k["key"] == handle.key]
    assert doc["holders"] == ["%s:%d" % holder] and doc["nbytes"] >= 5000
    biggest = json.loads(fetch(base(pool) + f"/api/biggest{token}")[1])
    assert biggest[0]["key"] == handle.key
    with pytest.raises(ValueError):
        pool.apply(failing, [7]).get()

    def errors():
        pages = [json.loads(fetch(base(pool) + f"/api/worker{token}&address={'%s:%d' % w}")[1])
                 for w in pool.available_cores]
        return [e for p in pages for e in p["errors"]]

    wait_for_sync(lambda: errors(), 10, "no worker page shows the task's error")
    assert "ValueError: no good: 7" in errors()[-1][2] and errors()[-1][1] == "failing"


def test_dcenter_serves_it_by_default_refuses_exposure_and_can_do_without():
    with Proc([DCENTER, "--port", "0", "--dashboard-port", "0"]) as center:
        port = center.wait_for_line(r"Dashboard at http://127\.0\.0\.1:(\d+)/status$").group(1)
        assert fetch(f"http://127.0.0.1:{port}/api/snapshot")[0] == 200  # no secret: no token
        center.signal(signal.SIGTERM)
        assert center.wait() == 0
    with Proc([DCENTER, "--port", "0", "--dashboard-host", "0.0.0.0"]) as exposed:
        assert exposed.wait() != 0
        assert "secret" in exposed.output
    with Proc([DCENTER, "--port", "0", "--no-dashboard"]) as plain:
        plain.wait_for_line(r"Started center at")
        assert "Dashboard at" not in plain.output
        plain.signal(signal.SIGTERM)
        assert plain.wait() == 0


def test_metrics_open_to_a_scraper_when_asked(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    cmd = [DCENTER, "--port", "0", "--dashboard-port", "0", "--secret-file", str(secret),
           "--metrics-open"]  # fmt: skip
    with Proc(cmd) as center:
        port = center.wait_for_line(r"Dashboard at http://127\.0\.0\.1:(\d+)/status\?token=")
        port = port.group(1)
        assert fetch(f"http://127.0.0.1:{port}/metrics")[0] == 200
        assert fetch(f"http://127.0.0.1:{port}/api/snapshot")[0] == 403
        center.signal(signal.SIGTERM)
        assert center.wait() == 0
