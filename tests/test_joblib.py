"""joblib's Parallel through the distributed3 backend, on real workers."""
import os

import pytest

joblib = pytest.importorskip("joblib")
import distributed3.joblib  # noqa: E402,F401 -- registers the backend


def worker_pid(_):
    return os.getpid()


def fail_on(x, bad):
    if x == bad:
        raise ZeroDivisionError(f"bad {x}")
    return x


def test_parallel_on_a_pool_with_batches(pool, workers):
    before = sum(w.tasks_done for w in workers)
    with joblib.parallel_backend("distributed3", pool=pool):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(pow)(2, n) for n in range(200))
    assert out == [2**n for n in range(200)]
    done = sum(w.tasks_done for w in workers) - before
    assert 0 < done <= 200  # on the workers, in joblib's batches


def test_an_error_raises_its_own_type(pool):
    with joblib.parallel_config(backend="distributed3", pool=pool):
        with pytest.raises(ZeroDivisionError, match="bad 7"):
            joblib.Parallel()(joblib.delayed(fail_on)(x, 7) for x in range(50))
        # the backend is usable again after the failure
        assert joblib.Parallel()(joblib.delayed(abs)(-x) for x in range(3)) == [0, 1, 2]


@pytest.mark.slow
def test_default_backend_starts_one_local_cluster_for_every_call():
    try:
        with joblib.parallel_backend("distributed3"):
            first = set(joblib.Parallel(n_jobs=2)(joblib.delayed(worker_pid)(i)
                                                  for i in range(8)))  # fmt: skip
            second = set(joblib.Parallel(n_jobs=2)(joblib.delayed(worker_pid)(i)
                                                   for i in range(8)))  # fmt: skip
        default = distributed3.joblib._default
        assert os.getpid() not in first  # other processes ran them
        assert first | second <= {i["pid"] for i in default.worker_info().values()}
    finally:  # it would live until the test process exits, among other tests' children
        if distributed3.joblib._default is not None:
            distributed3.joblib._default.close()
