"""A real headless Chromium (tests/browser.py) against a tornado server on loopback.

What a dashboard needs from the browser: server-sent events arrive and change the page,
screenshots come out at the window's size, and no page reaches past loopback.
"""
import asyncio
import contextlib
import ipaddress
import json
import struct
import time
import zlib

import pytest
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

import browser
from distributed3.testing import run_in_cluster_loop

pytestmark = pytest.mark.slow

PAGE = """<!doctype html>
<html><head><title>events</title><link rel="icon" href="data:,"></head>
<body style="background: #fff">
  <h1 style="background: #c33; color: #fff">distributed3</h1>
  <p>tick <span id="tick">none</span>, state <span id="state">connecting</span></p>
  <script>
    const source = new EventSource("/events");
    source.onopen = () => { document.getElementById("state").textContent = "open"; };
    source.onerror = () => { document.getElementById("state").textContent = "error"; };
    source.onmessage = (event) => {
      document.getElementById("tick").textContent = JSON.parse(event.data).tick;
    };
  </script>
</body></html>
"""


class Page(tornado.web.RequestHandler):
    def get(self):
        self.write(PAGE)


class Events(tornado.web.RequestHandler):
    """A JSON ``{"tick": n}`` every 200 ms as server-sent events, until the browser or
    the test goes away."""

    def initialize(self, stopped):
        self.stopped = stopped

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        tick = 0
        while not self.stopped.is_set():
            self.write(f"data: {json.dumps({'tick': tick})}\n\n")
            try:
                await self.flush()
            except tornado.iostream.StreamClosedError:
                return
            tick += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), 0.2)


class Seen(tornado.web.RequestHandler):
    """Answers any request, proxy requests for other hosts included, and records it."""

    def initialize(self, seen):
        self.seen = seen

    def get(self):
        self.seen.append((self.request.method, self.request.uri))
        self.write("<title>via the proxy</title>")


@contextlib.contextmanager
def serve(handlers):
    """A tornado application of ``handlers`` on 127.0.0.1, port 0, on the tests'
    background loop; yields its base URL and stops it, connections and all, on exit."""

    async def start():
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(tornado.web.Application(handlers))
        server.add_sockets(sockets)
        return server, sockets[0].getsockname()[1]

    async def stop():
        server.stop()
        await server.close_all_connections()

    server, port = run_in_cluster_loop(start())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        run_in_cluster_loop(stop())


@pytest.fixture
def site():
    """The page and its event stream; the base URL."""

    async def event():
        return asyncio.Event()

    stopped = run_in_cluster_loop(event())
    with serve([(r"/", Page), (r"/events", Events, {"stopped": stopped})]) as url:
        try:
            yield url
        finally:
            run_in_cluster_loop(_set(stopped))


async def _set(event):
    event.set()


def skip_unavailable():
    reason = browser.browser_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def driver(tmp_path):
    skip_unavailable()
    with browser.chromium(tmp_path) as driver:
        yield driver


def text(driver, id):
    return driver.execute_script(f"return document.getElementById({id!r}).textContent")


@pytest.mark.timeout(60)
def test_server_sent_events_change_the_page(driver, site):
    driver.get(site)
    browser.wait_until(driver, lambda d: text(d, "state") == "open", 10, "the event stream")
    first = int(browser.wait_until(driver, lambda d: text(d, "tick").isdigit() and
                                   text(d, "tick"), 10, "a first event"))  # fmt: skip
    # three more events, each one written into the page as it came
    later = browser.wait_until(driver, lambda d: int(text(d, "tick")) >= first + 3 and
                               int(text(d, "tick")), 10, "three more events")  # fmt: skip
    assert later > first
    assert text(driver, "state") == "open"


@pytest.mark.timeout(60)
def test_selenium_manager_never_runs(tmp_path, monkeypatch):
    # it would look for, and download, a driver: chromium() names both programs instead
    skip_unavailable()
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*args, **kwargs):
        raise AssertionError("selenium-manager was asked for a driver")

    for name in ("binary_paths", "driver_location"):  # selenium >= 4.12, 4.10-4.11
        monkeypatch.setattr(SeleniumManager, name, refuse, raising=False)
    with browser.chromium(tmp_path, width=300, height=200) as driver:
        driver.get("data:text/html,<title>offline</title>")
        assert driver.title == "offline"


def png_size(path):
    """``(width, height)`` of the PNG at ``path``, after checking that its pixel data is
    whole (every row there, once decompressed)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, i = {}, 8
    while i < len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        chunks[kind] = chunks.get(kind, b"") + data[i + 8:i + 8 + length]
        i += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    pixels = zlib.decompress(chunks[b"IDAT"])
    assert len(pixels) == height * (1 + width * channels * depth // 8), "truncated pixels"
    assert len(set(pixels)) > 2, "a blank image"
    return width, height


@pytest.mark.timeout(60)
def test_screenshot_is_a_png_of_the_window(driver, site, tmp_path):
    driver.get(site)
    browser.wait_until(driver, lambda d: text(d, "tick").isdigit(), 10, "a first event")
    path = browser.screenshot(driver, tmp_path / "page.png")
    assert path == str(tmp_path / "page.png")
    assert png_size(path) == (1400, 900)


def fetch(driver, url):
    """``[error or None, milliseconds]`` of the page's ``fetch(url)``."""
    return driver.execute_async_script("""
        const [url, done] = arguments, start = performance.now();
        fetch(url, {mode: "no-cors"}).then(
            () => done([null, performance.now() - start]),
            (error) => done([String(error), performance.now() - start]));
    """, url)


def connect(driver, url):
    """``[error or None, milliseconds]`` of the page opening a WebSocket to ``url``."""
    return driver.execute_async_script("""
        const [url, done] = arguments, start = performance.now();
        const socket = new WebSocket(url);
        socket.onopen = () => { done([null, performance.now() - start]); socket.close(); };
        socket.onerror = () => done(["error", performance.now() - start]);
    """, url)


# 192.0.2.1 is TEST-NET-1; the names would need DNS
OUTSIDE = ["http://192.0.2.1/", "https://192.0.2.1/", "http://example.com/",
           "https://example.com/", "ws://192.0.2.1/"]


def connections(netlog):
    """``(tcp, udp_sent)`` from Chromium's net log: the addresses it opened TCP
    connections to, and how many UDP datagrams it sent."""
    with open(netlog) as f:
        log = json.load(f)
    name = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    tcp, udp_sent = set(), 0
    for event in log["events"]:
        kind = name[event["type"]]
        if kind == "TCP_CONNECT_ATTEMPT" and "address" in event.get("params", {}):
            tcp.add(event["params"]["address"])  # (its end carries the outcome instead)
        udp_sent += kind == "UDP_BYTES_SENT"
    return tcp, udp_sent


def is_loopback(address):
    """
    >>> is_loopback("127.0.0.1:80"), is_loopback("[::1]:80"), is_loopback("192.0.2.1:80")
    (True, True, False)
    """
    host = address.rpartition(":")[0].strip("[]")
    return ipaddress.ip_address(host).is_loopback


@pytest.mark.timeout(60)
def test_no_page_reaches_past_loopback(site, tmp_path):
    skip_unavailable()
    from selenium.common.exceptions import WebDriverException

    netlog = tmp_path / "netlog.json"
    with browser.chromium(tmp_path, width=300, height=200,
                          arguments=[f"--log-net-log={netlog}"]) as driver:  # fmt: skip
        driver.get(site)  # loopback: reached directly
        assert driver.title == "events"
        for url in OUTSIDE:
            error, ms = fetch(driver, url) if url.startswith("http") else connect(driver, url)
            assert error is not None, url
            assert ms < 2000, (url, ms)
        for url in OUTSIDE[:4]:
            start = time.monotonic()
            with pytest.raises(WebDriverException, match="ERR_PROXY_CONNECTION_FAILED"):
                driver.get(url)
            assert time.monotonic() - start < 5, url
    # the browser's own record, its background requests included: every connection it
    # tried went to loopback (the page's server, the refusing proxy), and it sent no
    # datagram (Chromium does connect() a UDP socket towards a public address to learn
    # which local address would route there, but that sends nothing)
    tcp, udp_sent = connections(netlog)
    assert tcp and all(is_loopback(address) for address in tcp), tcp
    assert site.removeprefix("http://") in tcp  # directly, not through the proxy
    assert udp_sent == 0


@pytest.mark.timeout(60)
def test_requests_past_loopback_go_to_the_proxy(tmp_path):
    # what the browser sends for an outside address arrives here, on loopback
    skip_unavailable()
    seen = []
    with serve([(r".*", Seen, {"seen": seen})]) as proxy:
        with browser.chromium(tmp_path, width=300, height=200,
                              proxy=proxy.removeprefix("http://")) as driver:  # fmt: skip
            driver.get("http://192.0.2.1/dashboard")
            assert driver.title == "via the proxy"
    assert ("GET", "http://192.0.2.1/dashboard") in seen
