"""The one exception that ends a run ``failed`` with a given ``last_error``."""

from __future__ import annotations

from assistantd.api.text import repair

MAX_MESSAGE = 500  # characters of last_error.message: a reason, not a transcript


class RunFailure(Exception):
    """Raised anywhere in a run's execution: the run ends ``failed`` with ``last_error``
    ``{code, message}`` (``code`` one of the spec's: server_error, rate_limit_exceeded,
    invalid_prompt). The message is cut to :data:`MAX_MESSAGE` characters and repaired; it
    should say what kind of failure this was and never carry request data (log that instead)."""

    def __init__(self, code: str, message: str) -> None:
        message = short_message(message)
        super().__init__(message)
        self.code, self.message = code, message


def short_message(message: str) -> str:
    """``message`` as ``last_error`` may hold it: storable, and at most MAX_MESSAGE long."""
    message = repair(message)
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"
