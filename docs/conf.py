"""Sphinx configuration of distributed3's documentation.

Build it as CI does (tests/test_docs.py), warnings as errors::

    pip install -e '.[docs]' && python -m sphinx -W -b html docs docs/_build/html
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from distributed3 import __version__  # noqa: E402

project = "distributed3"
author = "The distributed3 developers"
copyright = "2026, " + author
release = version = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Distributed computing with data locality"}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# The user guide pages include sections of the README, whose headings start at ##
suppress_warnings = ["myst.header"]
myst_heading_anchors = 3


def cli_help(app, docname, source):
    """Replace ``{cli-help:center}`` / ``{cli-help:worker}`` / ``{cli-help:ssh}`` with that
    program's --help, so the reference cannot drift from the options the program takes."""
    programs = {"center": ["-m", "distributed3", "center"],
                "worker": ["-m", "distributed3", "worker"],
                "ssh": ["-m", "distributed3.deploy.ssh"]}  # fmt: skip
    for role, args in programs.items():
        marker = "{cli-help:%s}" % role
        if marker in source[0]:
            out = subprocess.run([sys.executable, *args, "--help"],
                                 capture_output=True, text=True, check=True, cwd=ROOT,
                                 env={**os.environ, "COLUMNS": "88"})  # fmt: skip
            source[0] = source[0].replace(marker, out.stdout.rstrip())


def setup(app):
    app.connect("source-read", cli_help)
