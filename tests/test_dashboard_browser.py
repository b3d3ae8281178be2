"""The dashboard's pages in a real headless Chromium (tests/browser.py), while real tasks
run on a real local cluster."""
import time

import pytest
from selenium.webdriver.common.by import By

import browser
from distributed3 import Pool
from distributed3.testing import released

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    reason = browser.browser_unavailable()
    if reason:
        pytest.skip(reason)
    with browser.chromium(tmp_path_factory.mktemp("chromium")) as d:
        yield d


@pytest.fixture(scope="module")
def pool():
    with Pool(n_workers=2) as p:
        yield p


def text(driver, css):
    """An element's text, read in one step: the pages redraw twice a second."""
    return driver.execute_script("return document.querySelector(arguments[0]).textContent",
                                 css)  # fmt: skip


def attributes(driver, css, name):
    """``name`` of every element ``css`` selects, read in one step."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))",
        css, name)  # fmt: skip


def test_the_cluster_page_follows_a_map_of_blocking_tasks(driver, pool, tmp_path):
    driver.get(pool.dashboard_link)
    browser.wait_until(driver, lambda d: text(d, "#workers-count") == "2", 20, "2 workers")
    assert set(attributes(driver, "#workers tbody tr", "data-address")) == {
        "%s:%d" % w for w in pool.available_cores}  # fmt: skip
    done_before = int(text(driver, "#done-count"))
    release = str(tmp_path / "go")
    futures = [pool.submit(released, release, i) for i in range(2)]
    browser.wait_until(driver, lambda d: text(d, "#running-count") == "2", 20,
                       "the page to show the 2 blocked tasks running")  # fmt: skip
    open(release, "w").close()
    assert pool.gather(futures) == [0, 1]
    browser.wait_until(driver, lambda d: text(d, "#running-count") == "0"
                       and int(text(d, "#done-count")) == done_before + 2, 20,
                       "the page to show them done")  # fmt: skip
    assert text(driver, "#status") == "live"


def test_the_task_stream_draws_the_tasks_by_function(driver, pool):
    pool.gather(pool.map(lambda x: time.sleep(0.01) or x, range(40), chunksize=1))
    driver.get(pool.dashboard_link)
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-tab="tasks"]').click()

    bars = '#stream svg rect.task[data-name="lambda"]'
    browser.wait_until(driver, lambda d: len(attributes(d, bars, "width")) >= 1, 20,
                       "task bars in the stream")  # fmt: skip
    assert "lambda" in text(driver, "#legend")
    assert all(float(w) >= 1 for w in attributes(driver, bars, "width"))


def test_a_key_search_finds_its_holder(driver, pool):
    [handle] = pool.scatter([list(range(1000))])
    [holder] = pool.who_has([handle])[handle.key]
    driver.get(pool.dashboard_link)
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-tab="data"]').click()
    box = driver.find_element(By.ID, "key-search")
    box.clear()
    box.send_keys(handle.key)
    driver.find_element(By.ID, "key-search-go").click()

    def result(d):
        return [r.text for r in d.find_elements(By.CSS_SELECTOR, "#key-results tbody tr")]

    browser.wait_until(driver, lambda d: any(handle.key in r for r in result(d)), 10,
                       "the key in the search results")  # fmt: skip
    [row] = [r for r in result(driver) if handle.key in r]
    assert "%s:%d" % holder in row


def test_a_page_without_the_token_is_refused(driver, pool, tmp_path_factory):
    with browser.chromium(tmp_path_factory.mktemp("fresh")) as fresh:  # no cookie yet
        fresh.get(pool.dashboard_link.split("?")[0])
        assert "needs its token" in fresh.find_element(By.TAG_NAME, "body").text


def failing(x):
    raise ValueError(f"no good: {x}")


def test_a_worker_page_shows_the_errors_its_tasks_raised_and_throughput_is_drawn(driver, pool):
    with pytest.raises(ValueError):
        pool.apply(failing, [42]).get()
    pool.gather(pool.map(lambda x: x, range(200)))
    driver.get(pool.dashboard_link)
    rows = "#workers tbody tr"
    browser.wait_until(driver, lambda d: len(attributes(d, rows, "data-address")) == 2, 20,
                       "the workers' rows")  # fmt: skip

    def page_of(address):
        driver.find_element(By.CSS_SELECTOR, 'nav a[data-tab="cluster"]').click()
        browser.wait_until(driver, lambda d: d.find_element(
            By.CSS_SELECTOR, f'{rows}[data-address="{address}"]').click() or True,
            10, "a click on the worker's row")  # fmt: skip
        browser.wait_until(driver, lambda d: address in text(d, "#worker-title"), 10,
                           "the worker's page")  # fmt: skip

    # the worker that ran it reports the error within a second or so; its page shows it
    addresses = attributes(driver, rows, "data-address")
    found = []
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        for address in addresses:
            page_of(address)
            try:
                browser.wait_until(driver, lambda d: "no good" in text(d, "#worker-errors"),
                                   1.5, "the error")  # fmt: skip
                found.append(address)
                break
            except TimeoutError:
                pass
    assert found, "no worker's page showed the task's error"
    assert "failing: ValueError: no good: 42" in text(driver, "#worker-errors")
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-tab="throughput"]').click()
    browser.wait_until(driver, lambda d: len(attributes(d, "#tasks-chart svg path", "d")) == 1,
                       10, "the tasks/s chart")  # fmt: skip
    [line] = attributes(driver, "#tasks-chart svg path", "d")
    assert line.count("L") >= 10  # a point a second
