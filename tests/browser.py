"""A real headless Chromium for tests, driven through chromedriver, that cannot reach the internet.

::

    test process                                  tmpdir/ (everything lives here)
    ------------                                  -------------------------------
    chromium(tmpdir) --starts--> chromedriver     chromedriver.log
                                  --starts--> chromium --headless=new
                                               --user-data-dir -->  profile-<n>/
         driver.get("http://127.0.0.1:<port>/")  --> straight to the server on loopback
         any other address (http, https, ws, DNS over HTTPS)
                                               --> proxy 127.0.0.1:<reserved port>: refused

Debian's packages provide both programs (``tests/system-packages.sh`` installs them):
``/usr/bin/chromium`` and ``/usr/bin/chromedriver``.  Selenium is always handed both
paths, so it never runs selenium-manager, which would look for (and download) a driver;
``SE_OFFLINE=true`` tells selenium-manager to stay offline should it run after all.

Every request that is not for loopback goes to a proxy on a loopback port that this
module holds bound but never listens on: the connection is refused at once, so a page
that reaches for the internet fails fast, and no packet leaves the machine.  Chromium
never sends loopback through a proxy (its implicit bypass rules), and DNS names other
than localhost resolve to nothing.  In a pytest test::

    def test_page(tmp_path):
        reason = browser.browser_unavailable()
        if reason:
            pytest.skip(reason)
        with browser.chromium(tmp_path) as driver:
            driver.get(url)
            browser.wait_until(driver, lambda d: d.title == "ready", 10, "the title")
            browser.screenshot(driver, tmp_path / "page.png")

On exit the driver quits, even when the body raised, and any process it started that
is still there (the browser, its renderers, its crash handler) is killed.
"""
import contextlib
import functools
import itertools
import os
import shutil
import socket
import tempfile
import time

import psutil

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
START_TIMEOUT = 60  # s for chromedriver and the browser to come up (2 loaded cores)

_profiles = itertools.count()


def flags(user_data_dir, width, height, proxy):
    """The command line flags of the browser: headless, quiet, no internet.

    >>> args = flags("/tmp/p", 800, 600, "127.0.0.1:1")
    >>> "--window-size=800,600" in args and "--proxy-server=127.0.0.1:1" in args
    True
    """
    return [
        "--headless=new",
        "--no-sandbox",  # tests run as root, where the sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers have a small /dev/shm
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        "--no-default-browser-check",
        f"--user-data-dir={user_data_dir}",
        f"--window-size={width},{height}",
        # Everything but loopback goes to a proxy that refuses: Chromium bypasses the
        # proxy for localhost, 127.0.0.0/8 and [::1] on its own; the list only makes
        # that explicit (the rule "<-loopback>" would do the opposite).
        f"--proxy-server={proxy}",
        "--proxy-bypass-list=localhost;127.0.0.1;[::1]",
        # names other than localhost resolve to nothing, whatever asks
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        # WebRTC's UDP would not go through the proxy: no UDP it does not proxy
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    ]


@functools.cache
def browser_unavailable():
    """Why :func:`chromium` cannot run here (selenium or a program missing, the browser
    does not start), or None if it can.  Starts a browser once per process to find out.

    >>> browser_unavailable() is None or isinstance(browser_unavailable(), str)
    True
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{', '.join(missing)} not installed (run tests/system-packages.sh as root)"
    with tempfile.TemporaryDirectory(prefix="distributed3-browser-") as tmpdir:
        try:
            with chromium(tmpdir, width=200, height=100) as driver:
                driver.get("about:blank")
        except Exception as e:
            return f"headless chromium does not start: {type(e).__name__}: {e}"
    return None


@contextlib.contextmanager
def _refusing_port():
    """A loopback ``host:port`` that refuses every connection while the block runs: bound,
    so nothing else takes it, and never listening, so the kernel answers a reset."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield "%s:%d" % s.getsockname()


@contextlib.contextmanager
def chromium(tmpdir, width=1400, height=900, proxy=None, arguments=()):
    """A selenium ``WebDriver`` for a new headless Chromium whose page area is
    ``width`` x ``height``, with a fresh profile under ``tmpdir``.

    Requests for anything but loopback go to ``proxy`` (``host:port``); by default a
    loopback port that refuses, so they fail at once.  A test can pass the address of
    a server it runs to see what the browser tried to reach.  ``arguments`` are more
    command line flags (``--log-net-log=<path>`` records every socket it opens).

    >>> if browser_unavailable() is None:
    ...     with chromium(tempfile.mkdtemp(), width=300, height=200) as driver:
    ...         driver.get("data:text/html,<title>hi</title>")
    ...         print(driver.title)
    ... else:
    ...     print("hi")
    hi
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = os.path.join(os.fspath(tmpdir), f"profile-{os.getpid()}-{next(_profiles)}")
    os.makedirs(profile)
    with contextlib.ExitStack() as stack:
        if proxy is None:
            proxy = stack.enter_context(_refusing_port())
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in [*flags(profile, width, height, proxy), *arguments]:
            options.add_argument(argument)
        # Chromium keeps its crash reports under $XDG_CONFIG_HOME, not the profile:
        # there too they stay under the profile, and name it on the crash handler's
        # command line, which finds that handler after it has left the process tree
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(profile, "config"),
                   XDG_CACHE_HOME=os.path.join(profile, "cache"))
        service = Service(executable_path=CHROMEDRIVER, env=env,
                          log_output=os.path.join(os.fspath(tmpdir), "chromedriver.log"))
        os.environ["SE_OFFLINE"] = "true"  # were selenium-manager to run after all
        driver = None
        try:
            driver = webdriver.Chrome(options=options, service=service)
            driver.set_page_load_timeout(START_TIMEOUT)
            _fit_viewport(driver, width, height)
            yield driver
        finally:
            started = _descendants(service) + _using(profile)
            if driver is not None:
                with contextlib.suppress(Exception):
                    driver.quit()
            else:
                with contextlib.suppress(Exception):
                    service.stop()
            _kill(started + _using(profile))
            shutil.rmtree(profile, ignore_errors=True)


def _fit_viewport(driver, width, height):
    """Grow the window so that the page itself, not the window around it, is
    ``width`` x ``height``: headless Chromium draws a toolbar's worth of browser
    around the page, and screenshots show the page alone."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if inner != [width, height]:
        size = driver.get_window_size()
        driver.set_window_size(size["width"] + width - inner[0],
                               size["height"] + height - inner[1])


def _descendants(service):
    """chromedriver and every process below it, while they run."""
    process = getattr(service, "process", None)
    if process is None:
        return []
    try:
        root = psutil.Process(process.pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def _using(profile):
    """The processes whose command line names ``profile``: the browser and its helpers,
    even those that left chromedriver's tree (a crash handler double-forks)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if any(profile in arg for arg in p.info["cmdline"] or ()):
                found.append(p)
    return found


def _kill(processes, timeout=10):
    """Give ``processes`` (psutil) ``timeout`` s to end, then kill those still running.

    A zombie counts as ended: the browser's helpers that double-forked are init's
    children, and init, not this process, reaps them when it gets to it.
    """
    def running():
        alive = []
        for p in processes:
            with contextlib.suppress(psutil.Error):
                if p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        return alive

    deadline = time.monotonic() + timeout
    while running() and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in running():
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(running(), timeout=timeout)


def wait_until(driver, predicate, timeout, what):
    """Poll ``predicate(driver)`` until it is true and return its value; after
    ``timeout`` s raise ``TimeoutError`` naming ``what`` and the page's URL and title.

    Errors the predicate raises while the page is still changing (an element not there
    yet, a stale element) count as false until the deadline, which re-raises the last.

    >>> wait_until(None, lambda d: 42, 1, "an answer")
    42
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        error = None
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception as e:  # selenium's NoSuchElement, StaleElementReference, ...
            error = e
        if time.monotonic() > deadline:
            where = "" if driver is None else f" on {driver.current_url!r} ({driver.title!r})"
            raise TimeoutError(f"waited {timeout} s for {what}{where}") from error
        time.sleep(interval)
        interval = min(interval * 1.5, 0.1)


def screenshot(driver, path):
    """Save a PNG of the browser's viewport at ``path``, return the path.

    Open it when a test fails: the page as the browser drew it.
    """
    path = os.fspath(path)
    if not driver.save_screenshot(path):
        raise OSError(f"the browser could not write a screenshot to {path}")
    return path
