"""Unit tests: pure logic, no server, no database, no Docker — the whole folder runs in seconds
(``pytest tests/unit``). They run once, not once per database backend."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_left_behind():
    """The suite-wide check that no sandbox container outlived its server: these tests start none
    (and, without this override, would be repeated for every database backend)."""
    yield
