"""Layers point one way, and no module reaches into another object's private members.

::

    exceptions, utils, keys, scheduling,    import nothing of distributed3's
    graph, versions
    core/      the substrate                 imports only the above and itself
    fetch      values from their holders     core and the above
    center, worker/   the roles              core and the above; never the client
    client/    the Pool                      core and the above; deploy.local for Pool()
    multiprocessing, joblib   interfaces     the client
    dashboard/ web pages, metrics, health     the roles, core and the above
    deploy/    executables, local cluster    the dashboard, the roles, core and the above
    simulation   light workers, many a process   the worker, core and the above
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "distributed3")

BASE = {"exceptions", "utils", "keys", "scheduling", "graph", "versions"}
# the first part of a module's dotted name -> the first parts it may import
ALLOWED = {
    "exceptions": set(),
    "utils": set(),
    "keys": set(),
    "scheduling": set(),
    "graph": set(),
    "versions": set(),
    "core": {"core", "exceptions", "utils"},
    "fetch": {"core"} | BASE,
    "center": {"center", "core"} | BASE,
    "worker": {"worker", "core", "fetch"} | BASE,
    "client": {"client", "core", "fetch"} | BASE,
    "dashboard": {"dashboard", "center", "worker", "core"} | BASE,
    "deploy": {"deploy", "dashboard", "center", "worker", "core"} | BASE,
    "testing": {"center", "worker", "client", "core"} | BASE,
    "simulation": {"worker", "core"} | BASE,
    "multiprocessing": {"client"} | BASE,
    "joblib": {"client"} | BASE,
    "__init__": {"core"},
    "__main__": {"deploy", "versions"},
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
    tree = ast.parse(open(path).read())
    if name == "__init__":  # its names load lazily; it imports them for type checkers only
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If)
                                                  and ast.unparse(n.test) == "TYPE_CHECKING")]
    for node in ast.walk(tree):
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


# ``x._name`` where ``x`` is not ``self``: each is a documented name of another library
OUTSIDE_PRIVATES = {
    "os._exit": "the documented way for a forked child to end without cleanup",
    "asyncio._get_running_loop": "the documented, cheap check for a running loop",
}


def private_reaches(path):
    """``(line, expression)`` for each ``x._name`` in ``path`` where ``x`` is not
    ``self``, ``cls`` or ``super()``."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):  # fmt: skip
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_reaches_into_another_objects_private_members():
    """What a helper needs of the pool, the session or a handle is a public method:
    ``pool._x`` from outside the Pool class (or any such reach) fails here."""
    wrong = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                wrong += [f"{os.path.relpath(path, ROOT)}:{line}: {expr}"
                          for line, expr in private_reaches(path)
                          if expr not in OUTSIDE_PRIVATES]  # fmt: skip
    assert not wrong, "private members used from outside their class:\n" + "\n".join(wrong)


def test_no_function_is_longer_than_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"distributed3.{name}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_no_module_is_longer_than_500_lines():
    long = [f"distributed3.{name}: {n} lines" for name, path in modules().items()
            if (n := sum(1 for _ in open(path))) > 500]  # fmt: skip
    assert not long, "\n".join(long)
