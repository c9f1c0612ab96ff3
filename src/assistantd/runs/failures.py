"""The one exception that ends a run ``failed`` with a given ``last_error``."""

from __future__ import annotations


class RunFailure(Exception):
    """Raised anywhere in a run's execution: the run ends ``failed`` with ``last_error``
    ``{code, message}`` (``code`` one of the spec's: server_error, rate_limit_exceeded,
    invalid_prompt)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
