"""Take the README's screenshots of the dashboard during a real map (as root, with
tests/system-packages.sh's chromium):  python docs/screenshots.py"""
import os
import sys
import tempfile
import threading
import time

from selenium.webdriver.common.by import By

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import browser  # noqa: E402
from distributed3 import Pool  # noqa: E402


def simulate(x):
    time.sleep(0.05 + (x % 7) * 0.02)
    return x


def transform(x):
    time.sleep(0.03)
    return x * 2


def main():
    with Pool(n_workers=2) as pool, tempfile.TemporaryDirectory() as tmp:
        pool.map(lambda x: x, range(10))

        def work():
            for _ in range(6):
                results = pool.map(simulate, range(60), chunksize=1)
                pool.gather(pool.map(transform, results, chunksize=2))

        busy = threading.Thread(target=work)
        busy.start()
        with browser.chromium(tmp, width=1300, height=700) as driver:
            driver.get(pool.dashboard_link)
            time.sleep(6)  # a few seconds of work on the page: what the picture shows
            driver.find_element(By.CSS_SELECTOR, 'nav a[data-tab="tasks"]').click()
            time.sleep(1)
            browser.screenshot(driver, os.path.join(HERE, "dashboard.png"))
            driver.find_element(By.CSS_SELECTOR, 'nav a[data-tab="cluster"]').click()
            time.sleep(1)
            browser.screenshot(driver, os.path.join(HERE, "dashboard-cluster.png"))
        busy.join()


if __name__ == "__main__":
    main()
