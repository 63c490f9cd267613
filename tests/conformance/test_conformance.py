"""Every Autobahn fuzzing-client case against the Starlette echo app on a real uvicorn server.

OK, NON-STRICT and INFORMATIONAL pass; ``HASKE_CONFORMANCE_STRICT=1`` makes NON-STRICT fail too.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from .cases import CASES
from .runner import FAILED, NON_STRICT, Case, run_case

FAILING = {FAILED, NON_STRICT} if os.environ.get("HASKE_CONFORMANCE_STRICT") == "1" else {FAILED}


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.id, marks=[pytest.mark.slow] * case.slow) for case in CASES],
)
def test_case(case: Case, echo_url: str) -> None:
    result = asyncio.run(run_case(echo_url, case))
    if result.outcome in FAILING:
        pytest.fail(result.explain(), pytrace=False)
