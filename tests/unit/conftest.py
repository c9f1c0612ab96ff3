"""Unit tests: pure logic, no server, no database, no Docker.

The suite's session fixtures are parametrised by database backend; the one of them that is
``autouse`` (the sandbox check) is replaced here, so that these tests run once, backend-free.
"""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_left_behind() -> Iterator[None]:
    yield
