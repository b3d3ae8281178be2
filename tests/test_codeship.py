"""Functions shipped by value keep their file name and source lines, for remote tracebacks."""
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
