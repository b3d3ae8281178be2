"""Layers point one way, and no module reaches into another object's private members.

::

    exceptions, utils, keys, scheduling     import nothing of distributed3's
    core/      the substrate                 imports only the above and itself
    fetch      values from their holders     core and the above
    center, worker/   the roles              core and the above; never the client
    client/    the Pool                      core and the above; deploy.local for Pool()
    deploy/    executables, local cluster    the roles, core and the above
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "distributed3")

BASE = {"exceptions", "utils", "keys", "scheduling"}
# the first part of a module's dotted name -> the first parts it may import
ALLOWED = {
    "exceptions": set(),
    "utils": set(),
    "keys": set(),
    "scheduling": set(),
    "core": {"core", "exceptions", "utils"},
    "fetch": {"core"} | BASE,
    "center": {"core"} | BASE,
    "worker": {"worker", "core", "fetch"} | BASE,
    "client": {"client", "core", "fetch"} | BASE,
    "deploy": {"deploy", "center", "worker", "core"} | BASE,
    "testing": {"center", "worker", "client", "core"} | BASE,
    "__init__": {"core"},
}
# single modules that may cross a layer, and why
EXCEPTIONS = {
    ("client.pool", "deploy.local"): "Pool() starts a local cluster",
}


def modules():
    """``{dotted name: path}`` of the package's modules, the benchmarks left out."""
    found = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d not in ("bench", "__pycache__")]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
                found[name.removesuffix(".__init__")] = path
    return found


def imported(name, path):
    """The distributed3 modules (dotted, without the package's name) that ``path`` imports."""
    package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distributed3."):
            found.add(node.module.removeprefix("distributed3."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("distributed3.") for a in node.names
                         if a.name.startswith("distributed3."))  # fmt: skip
    return found


@pytest.mark.parametrize("name", sorted(modules()))
def test_import_direction(name):
    path = modules()[name]
    allowed = ALLOWED[name.split(".")[0]]
    wrong = sorted(m for m in imported(name, path)
                   if m.split(".")[0] not in allowed and (name, m) not in EXCEPTIONS)  # fmt: skip
    assert not wrong, f"distributed3.{name} must not import {wrong}"


def test_the_layer_table_knows_every_folder():
    assert {name.split(".")[0] for name in modules()} <= set(ALLOWED)


def test_every_module_opens_with_a_docstring():
    for name, path in sorted(modules().items()):
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        assert doc and doc.strip(), f"distributed3.{name} has no module docstring"
