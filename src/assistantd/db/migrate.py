"""Apply the Alembic migrations to head (``assistantd migrate``, and on every start).

No shortcut: migrations run on an ordinary async engine (migrations/env.py), not the inline one.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from assistantd.settings import Settings

# The repository root: the package lives in src/assistantd/ and is installed editable.
ROOT = Path(__file__).resolve().parents[3]


def alembic_config(settings: Settings) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = settings.sqlalchemy_url
    config.attributes["configure_logging"] = False
    return config


def upgrade_to_head(settings: Settings) -> None:
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), "head")
