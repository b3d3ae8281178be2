"""The test helpers themselves: gen_test's time limit, and what it reports."""
import asyncio

import pytest

from distributed3.testing import gen_test
from distributed3.utils import wait_for


def test_gen_test_reports_a_test_that_hangs():
    @gen_test(timeout=0.2)
    async def hangs():
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match="hangs did not finish within 0.2 s"):
        hangs()


def test_gen_test_keeps_a_timeout_error_the_test_raised_itself():
    @gen_test(timeout=10)
    async def gives_up():
        await wait_for(lambda: False, 0.05, "the worker never came")

    with pytest.raises(TimeoutError, match="the worker never came"):
        gives_up()
