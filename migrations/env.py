"""Alembic environment: runs migrations on the async engine the server itself uses."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from assistantd.db.models import Base
from assistantd.settings import Settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    if config.attributes.get("url"):
        return config.attributes["url"]
    settings = Settings()
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.sqlalchemy_url


# pg_advisory_xact_lock key: replicas started together migrate one at a time (any fixed number).
MIGRATION_LOCK = 0x61737364  # "assd"

# Search structures kept outside the model (see assistantd.db.models.Chunk).
UNMANAGED_COLUMNS = {"tsv", "embedding_vec"}


def _include(obj, name, type_, reflected, compare_to) -> bool:
    if type_ == "table" and name and name.startswith("chunks_fts"):
        return False
    if type_ == "column" and reflected and compare_to is None and name in UNMANAGED_COLUMNS:
        return False
    if type_ == "index" and reflected and compare_to is None and name and name.startswith("ix_chunks_"):
        return False
    return True


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several servers starting at once on one database (replicas) would each apply the
            # same migrations; the others wait here, then find the schema at head and do nothing.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
