"""The documentation site builds with warnings as errors, its reference follows the code,
and the examples of its own pages run."""
import html
import os
import re
import subprocess
import sys

import pytest

from distributed3.testing import markdown_python_blocks, run_markdown_examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = ["index", "getting-started", "pool", "interfaces", "configuration", "performance",
         "security", "coming-from", "api", "cli", "internals", "changelog"]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                            "html", DOCS, str(out)], capture_output=True, text=True,
                           timeout=240)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr  # any warning fails it

    def text(page):
        with open(out / f"{page}.html") as f:
            return html.unescape(re.sub(r"<[^>]+>", "", f.read()))

    return text


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_site_builds_every_page_without_a_warning(site):
    for page in PAGES:
        assert len(site(page)) > 1000, page  # a page with its content, not a stub


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_reference_comes_from_the_code(site):
    api = site("api")
    for name in ["Pool", "RemoteData", "RemoteList", "as_completed", "Executor",
                 "AsyncResult", "Distributed3Backend", "DataLostError", "LocalCluster"]:
        assert f"{name}" in api, name
    # docstrings, with the signatures' types
    assert "Apply func to every item of the iterables" in api
    assert "RemoteList[T]" in api
    cli = site("cli")
    assert "{cli-help" not in cli  # the programs' own --help, filled in at build time
    assert "--memory-limit" in cli and "--heartbeat-timeout" in cli
    assert "DISTRIBUTED3_WORKER_MEMORY_LIMIT" in site("configuration")


@pytest.mark.parametrize("page", ["index", "interfaces", "configuration", "coming-from"])
@pytest.mark.timeout(120)
def test_the_examples_of_the_pages_run(page):
    path = os.path.join(DOCS, f"{page}.md")
    blocks = [b for b in markdown_python_blocks(path) if ">>>" in b]
    assert blocks, f"{page}.md has no examples"
    run_markdown_examples("\n".join(blocks), page, path)
