"""Functions shipped by value keep their file name and source lines, for remote tracebacks."""
import linecache
import pickle
import traceback

import pytest

from distributed3.core.codeship import cloudpickle_dumps
from distributed3.core.protocol import dumps_function


def test_code_shipped_by_value_keeps_file_and_source_lines(tmp_path):
    """A function from a file the worker cannot read (an IPython cell, a client-only
    script) still shows its file, line and source line in a traceback raised there."""
    import subprocess
    import sys

    path = tmp_path / "client_only.py"
    path.write_text("import math\n\n\ndef inverse(x):\n    y = x * 2\n    return 1 / (y - y)\n")
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    data = dumps_function(namespace["inverse"])
    path.unlink()  # the worker's machine does not have the file
    script = (
        "import sys, traceback\n"
        "from distributed3.core.protocol import loads_function\n"
        "f = loads_function(sys.stdin.buffer.read())\n"
        "try:\n    f(1)\n"
        "except ZeroDivisionError:\n    print(traceback.format_exc())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], input=data, capture_output=True,
                         timeout=30, check=True).stdout.decode()  # fmt: skip
    assert f'File "{path}", line 6, in inverse' in out
    assert "return 1 / (y - y)" in out
    assert "<dynamic-code>" not in out


SOURCE = ("import math\n\n\ndef outer(x):\n    def inner(y):\n        return [y / z for z in [0]]\n"
          "\n    return inner(x)\n")


def _ship(path):
    """``outer`` from ``path``, pickled by value as a client would send it."""
    path.write_text(SOURCE)
    namespace = {}
    exec(compile(SOURCE, str(path), "exec"), namespace)
    linecache.cache.pop(str(path), None)
    return cloudpickle_dumps(namespace["outer"])


def test_lines_of_nested_code_arrive_where_traceback_looks(tmp_path):
    path = tmp_path / "cell.py"
    data = _ship(path)
    path.unlink()  # the receiving side has no such file
    outer = pickle.loads(data)
    assert outer.__code__.co_filename == str(path)
    with pytest.raises(ZeroDivisionError) as info:
        outer(1)
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{path}", line 6, in ' in text  # in inner, or its list comprehension
    assert "return [y / z for z in [0]]" in text and "return inner(x)" in text
    linecache.cache.pop(str(path), None)


def test_a_file_the_receiver_can_read_is_read_not_replaced(tmp_path):
    path = tmp_path / "module.py"
    data = _ship(path)
    path.write_text(SOURCE.replace("[0]", "[-1]"))  # the receiver's copy of the file differs
    linecache.cache.pop(str(path), None)
    pickle.loads(data)
    assert linecache.getline(str(path), 6).strip() == "return [y / z for z in [-1]]"
    linecache.cache.pop(str(path), None)
