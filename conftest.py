"""Doctests that use a ``pool`` get one shared embedded pool of two workers."""
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(scope="session")
def _doctest_pool():
    from distributed3 import Pool

    with Pool(n_workers=2) as pool:
        yield pool


@pytest.fixture(autouse=True)
def _pool_for_doctests(request):
    if isinstance(request.node, DoctestItem) and "pool." in request.node.dtest.docstring:
        request.getfixturevalue("doctest_namespace")["pool"] = request.getfixturevalue(
            "_doctest_pool"
        )
