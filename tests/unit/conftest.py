"""Unit tests: pure logic, no server, no database, no Docker.

The suite's conftest runs every test once per database backend through its session-wide
sandbox check (``no_sandbox_left_behind``); these tests start nothing, so they replace that
check with nothing and run once, whatever the backends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_left_behind() -> Iterator[None]:
    yield
