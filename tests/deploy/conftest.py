"""The composed stack's tests: they start no server of the suite's own (the stack runs its
servers in containers), so, like the unit tests, they replace the suite's per-backend sandbox
check with nothing and run once, whatever the backends. test_compose.py checks its own leftovers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_left_behind() -> Iterator[None]:
    yield
