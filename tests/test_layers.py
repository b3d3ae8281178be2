"""Layers point one way: the substrate imports nothing from the roles or the client."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "distributed3")

# module -> the distributed3 modules it may import
ALLOWED = {
    "exceptions": set(),
    "utils": set(),
    "codeship": set(),
    "protocol": {"codeship"},
    "scheduling": set(),
    "task": set(),
    "security": set(),
    "comm": {"exceptions", "protocol", "security", "utils"},
    "core": {"comm", "exceptions", "security", "utils"},
    "center": {"core", "task", "utils"},
    "execute": {"exceptions", "protocol"},
    "worker_center": {"comm", "exceptions", "utils"},
    "worker": {"core", "exceptions", "execute", "protocol", "scheduling", "task", "utils",
               "worker_center"},
    "sync": set(),
    "client": {"core", "protocol", "utils"},
    "dispatch": {"exceptions", "scheduling", "utils"},
    "recovery": {"dispatch", "exceptions"},
    "progress": set(),
    "procs": {"utils"},
    "stateful": {"protocol", "submission"},
    "results": {"client", "task"},
    "submission": {"client", "dispatch", "exceptions", "protocol", "results", "task", "utils"},
    "pool_streaming": {"submission"},
    "pool_data": {"client", "exceptions", "recovery", "results", "scheduling", "utils"},
    "local": {"core", "exceptions", "procs", "security", "utils"},
    "pool": {"client", "comm", "core", "exceptions", "local", "pool_data", "pool_streaming",
             "progress", "recovery", "results", "scheduling", "security", "stateful", "submission",
             "sync", "utils"},
}  # fmt: skip


def imported_modules(name):
    with open(os.path.join(PACKAGE, name + ".py")) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("distributed3."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("distributed3."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_import_direction(module):
    extra = imported_modules(module) - ALLOWED[module]
    assert not extra, f"distributed3.{module} must not import {sorted(extra)}"


def test_every_module_opens_with_a_docstring():
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            with open(os.path.join(PACKAGE, name)) as f:
                doc = ast.get_docstring(ast.parse(f.read()))
            assert doc and doc.strip(), f"{name} has no module docstring"
