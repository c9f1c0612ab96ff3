"""The tables. One row per wire object; JSON columns hold the parts the API treats as opaque.

Every table has an integer ``seq`` (the insertion order, which is what list cursors page by:
``created_at`` has one-second resolution) and the public string ``id``. Every row carries the
``tenant`` that made it: with API keys configured, each key sees only its own objects.

Plain declarative mappings, no shortcut: the hot paths' Core writes of these objects are in
``assistantd.db.rows``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class _Object:
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)


class Assistant(_Object, Base):
    __tablename__ = "assistants"
    __table_args__ = (Index("ix_assistants_tenant_seq", "tenant", "seq"),)

    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str | None] = mapped_column(Text)
    tools: Mapped[list[Any]]
    tool_resources: Mapped[dict[str, Any]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    temperature: Mapped[float | None]
    top_p: Mapped[float | None]
    response_format: Mapped[Any] = mapped_column(JSONType, nullable=True)
    reasoning_effort: Mapped[str | None] = mapped_column(String(16))


class Thread(_Object, Base):
    __tablename__ = "threads"
    __table_args__ = (Index("ix_threads_tenant", "tenant"),)

    tool_resources: Mapped[dict[str, Any]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")


class Message(_Object, Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_thread_seq", "thread_id", "seq"),)

    thread_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("threads.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16))
    incomplete_details: Mapped[dict[str, Any] | None]
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    incomplete_at: Mapped[int | None] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[list[Any]]
    assistant_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    attachments: Mapped[list[Any]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")


class File(_Object, Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_seq", "tenant", "seq"),)

    bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))


class Run(_Object, Base):
    """A run, with a snapshot of what it runs with, taken when it is created.

    ``worker``/``lease_until`` say which process executes it and until when that claim holds;
    ``history_seq`` is the last thread message the run sees (messages added later are not part
    of its prompt). Status moves only through :meth:`assistantd.runs.store.Writes.move`.
    """

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_thread_seq", "thread_id", "seq"),
        Index("ix_runs_status", "status"),
    )

    thread_id: Mapped[str] = mapped_column(String(64), ForeignKey("threads.id", ondelete="CASCADE"))
    assistant_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    required_action: Mapped[dict[str, Any] | None]
    last_error: Mapped[dict[str, Any] | None]
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    incomplete_details: Mapped[dict[str, Any] | None]
    model: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str] = mapped_column(Text)
    tools: Mapped[list[Any]]
    tool_resources: Mapped[dict[str, Any]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    usage: Mapped[dict[str, Any] | None]
    temperature: Mapped[float | None]
    top_p: Mapped[float | None]
    max_prompt_tokens: Mapped[int | None]
    max_completion_tokens: Mapped[int | None]
    truncation_strategy: Mapped[dict[str, Any]]
    tool_choice: Mapped[Any] = mapped_column(JSONType, nullable=True)
    parallel_tool_calls: Mapped[bool]
    response_format: Mapped[Any] = mapped_column(JSONType, nullable=True)
    reasoning_effort: Mapped[str | None] = mapped_column(String(16))
    history_seq: Mapped[int] = mapped_column(SeqType)
    worker: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None]
    # The run was created with include[] asking for file search results' content in its events.
    include_search_content: Mapped[bool] = mapped_column(default=False, server_default="0")


class RunStep(_Object, Base):
    __tablename__ = "run_steps"
    __table_args__ = (Index("ix_run_steps_run_seq", "run_id", "seq"),)

    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(64))
    assistant_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    step_details: Mapped[dict[str, Any]]
    last_error: Mapped[dict[str, Any] | None]
    expired_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    usage: Mapped[dict[str, Any] | None]
    # Never shown: for each built-in tool call (by id), what the model wrote and was told —
    # ``{"arguments": …, "output": …, "sources": {marker: file_id}}`` — to rebuild its context.
    tool_io: Mapped[dict[str, Any] | None]


# --- vector stores (build step 4) ---------------------------------------------------------------

class VectorStore(_Object, Base):
    """A vector store; its ``status``, ``file_counts`` and ``usage_bytes`` are derived from its files."""

    __tablename__ = "vector_stores"
    __table_args__ = (Index("ix_vector_stores_tenant_seq", "tenant", "seq"),)

    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    expires_after: Mapped[dict[str, Any] | None]
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    last_active_at: Mapped[int | None] = mapped_column(BigInteger)


class VectorStoreFileBatch(_Object, Base):
    __tablename__ = "vector_store_file_batches"
    __table_args__ = (Index("ix_vector_store_file_batches_store_seq", "vector_store_id", "seq"),)

    vector_store_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("vector_stores.id", ondelete="CASCADE"))
    cancelled: Mapped[bool]


class VectorStoreFile(Base):
    """A file attached to a vector store; its public ``id`` is the file's id, unique per store.

    Rows ``in_progress`` are the ingestion queue: a worker claims one with a conditional UPDATE
    (``worker``/``lease_until``), as the run executor claims runs.
    """

    __tablename__ = "vector_store_files"
    __table_args__ = (
        Index("ux_vector_store_files_store_file", "vector_store_id", "id", unique=True),
        Index("ix_vector_store_files_store_seq", "vector_store_id", "seq"),
        Index("ix_vector_store_files_batch_seq", "batch_id", "seq"),
        Index("ix_vector_store_files_status", "status"),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    vector_store_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("vector_stores.id", ondelete="CASCADE"))
    batch_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[dict[str, Any] | None]
    usage_bytes: Mapped[int] = mapped_column(BigInteger)
    chunking_strategy: Mapped[dict[str, Any]]
    attributes: Mapped[dict[str, Any]]
    worker: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None]


class Chunk(Base):
    """One chunk of a vector store file's text, with its vector (float32 bytes) and the model
    that made it (``None`` when search is lexical only). Lexical search reads a full-text index
    kept outside the model by migration 3b1f6a0c2d47: an FTS5 table on SQLite, a ``tsvector``
    column on PostgreSQL."""

    __tablename__ = "chunks"
    __table_args__ = (
        Index("ux_chunks_store_file_index", "vector_store_id", "file_id", "index", unique=True),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(64))
    vector_store_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("vector_stores.id", ondelete="CASCADE"))
    file_id: Mapped[str] = mapped_column(String(64))
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- server processes and their shared sandboxes (replicas on one database) ---------------------

class Worker(Base):
    """A live server process: it writes ``seen_at`` (epoch seconds) every few seconds and deletes
    its row when it stops. A row not refreshed for :data:`assistantd.workers.TIMEOUT_SECONDS` is
    a dead process's."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[float]
    seen_at: Mapped[float]


class SandboxRecord(Base):
    """A code-interpreter sandbox container of the deployment (its Docker name is
    ``assistantd-<id>``), whichever process started it.

    ``thread_id`` is null for a warm sandbox, which belongs to the process ``worker`` that started
    it; a thread's sandbox belongs to the deployment and is used by one process at a time, the one
    holding its lease (``holder``, ``lease_until``). ``placed_files`` are the file ids already
    copied into its ``/mnt/data``."""

    __tablename__ = "sandboxes"
    __table_args__ = (
        Index("ux_sandboxes_thread", "thread_id", unique=True),
        Index("ix_sandboxes_tenant", "tenant"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[str | None] = mapped_column(String(64))
    tenant: Mapped[str | None] = mapped_column(String(64))
    holder: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None]
    last_used: Mapped[float]
    placed_files: Mapped[list[Any]]
