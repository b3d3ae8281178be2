"""The public API is typed: mypy passes on the package (its settings in pyproject.toml),
and a user's script checked with ``--strict`` sees what each call returns."""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# A user's script: assert_type fails the check where a call's type is not the one named
USAGE = textwrap.dedent("""
    import concurrent.futures as cf
    from typing import Any, assert_type

    import distributed3
    from distributed3 import Executor, Pool, RemoteData, RemoteList, as_completed, wait
    from distributed3.multiprocessing import AsyncResult
    from distributed3.multiprocessing import Pool as ProcessPool


    def square(x: int) -> int:
        return x * x


    def main() -> None:
        with Pool(n_workers=1, timeout=5) as pool:
            squares = pool.map(square, range(4), chunksize=2)
            assert_type(squares, RemoteList[int])
            assert_type(squares[0], RemoteData[int])
            assert_type(squares[0].get(), int)
            assert_type(squares[1:], list[RemoteData[int]])
            assert_type(pool.submit(square, 3).result(timeout=1.0), int)
            assert_type(pool.apply(square, (3,)), RemoteData[int])
            assert_type(list(pool.imap(square, range(3))), list[int])
            assert_type(pool.scatter([1.5, 2.5]), list[RemoteData[float]])
            done, not_done = wait(list(squares))
            assert_type(done, set[RemoteData[int]])
            for handle in as_completed(squares):
                assert_type(handle, RemoteData[int])
            assert_type(pool.worker_info(), dict[tuple[str, int], dict[str, Any]])
            assert_type(pool.nworkers, int)
            with pool.executor() as ex:
                assert_type(ex.submit(square, 2), cf.Future[int])
        with Executor(max_workers=1) as executor:
            assert_type(list(executor.map(square, [1, 2])), list[int])
        with ProcessPool(1) as mp:
            assert_type(mp.map(square, [1, 2], 1), list[int])
            assert_type(mp.apply_async(square, (1,)), AsyncResult[int])
            assert_type(mp.starmap(pow, [(2, 3)]), list[int])
        assert_type(distributed3.__version__, str)
""")

# Mistakes the annotations must catch, each with the words of mypy's error
MISTAKES = {
    'Pool(n_workers="two")': 'Argument "n_workers" to "Pool"',
    "Pool().map(square, [1], timeout='soon')": 'Argument "timeout" to "map"',
    "Pool().apply(square, (1,)).get() + 'x'": 'Unsupported operand types for + ("int" and "str")',
    "Pool().map(square, [1]).get()": '"RemoteList[int]" has no attribute "get"',
}

CONFIG = textwrap.dedent("""
    [mypy]
    strict = True
    python_version = 3.11
    [mypy-distributed3.*]
    # the package is checked under its own settings (pyproject.toml); here only what
    # the user's code sees of it counts
    ignore_errors = True
    [mypy-cloudpickle.*,toolz.*,joblib.*,tqdm.*,_signal]
    ignore_missing_imports = True
""")


def mypy(*args, cwd=ROOT):
    env = {**os.environ, "MYPYPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "mypy", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=170)  # fmt: skip


def test_the_package_passes_mypy(tmp_path):
    out = mypy("--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


def test_a_users_strict_script_sees_the_public_types(tmp_path):
    script = tmp_path / "usage.py"
    script.write_text(USAGE + "".join(f"\n\ndef mistake_{i}() -> None:\n    {line}\n"
                                      for i, line in enumerate(MISTAKES)))  # fmt: skip
    (tmp_path / "mypy.ini").write_text(CONFIG)
    out = mypy("--config-file", str(tmp_path / "mypy.ini"), "--cache-dir",
               str(tmp_path / "cache"), str(script), cwd=tmp_path)  # fmt: skip
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    first_mistake = USAGE.count("\n") + 1
    in_usage = [e for e in errors if int(e.split(":")[1]) < first_mistake]
    assert in_usage == [], "\n".join(in_usage)  # every type as the script says
    for line, words in MISTAKES.items():  # and each mistake caught, with its cause
        assert any(words in e for e in errors), f"{line!r} not caught:\n{out.stdout}"
    assert len(errors) == len(MISTAKES), out.stdout
