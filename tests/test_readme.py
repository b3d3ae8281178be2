"""The README's examples run, and print what the README says they print."""
import os
import re
import subprocess
import sys

import pytest

from distributed3.testing import markdown_python_blocks, process_cluster, run_markdown_examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def python_blocks():
    return markdown_python_blocks(README)


def run_doctest(source, name, replace=None):
    run_markdown_examples(source, name, README, replace)


@pytest.mark.slow
def test_readme_cluster_example_against_real_processes():
    block = next(b for b in python_blocks() if "Pool('127.0.0.1:8787')" in b)
    with process_cluster(nworkers=2) as (address, _, _):
        run_doctest(block, "README cluster example", {"127.0.0.1:8787": address})


@pytest.mark.parametrize("index", range(1, 8))
def test_readme_other_examples(index):
    blocks = [b for b in python_blocks() if "127.0.0.1:8787" not in b and ">>>" in b]
    assert len(blocks) == 7, "update this test when README examples are added"
    run_doctest(blocks[index - 1], f"README example {index}")


@pytest.mark.slow
def test_quickstart_script():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "sum: -285" in out.stdout
    assert "A: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out.stdout


def test_readme_illustrations_compile_and_import():
    """Blocks that need other machines cannot run here; they must still be valid code."""
    import distributed3

    blocks = [b for b in python_blocks() if ">>>" not in b]
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")
        for names in re.findall(r"from distributed3 import ([\w, ]+)", block):
            for name in names.split(","):
                assert hasattr(distributed3, name.strip()), name


def test_ci_runs_the_readmes_test_command():
    """``.ci/run`` runs exactly the command the README gives for the tests."""
    with open(README) as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        command = f.read().strip().splitlines()[-1]
    assert "python -m pytest" in command
    assert f"```bash\n{command}\n```" in readme
