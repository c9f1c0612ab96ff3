"""Configuration, read from ``ASSISTANTD_*`` environment variables and a ``.env`` file.

The names of the variables are fixed by CONTRACT.md; limits carry the OpenAI API's own numbers
so that a request rejected by OpenAI is rejected here too.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ASSISTANTD_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path("./data")
    database_url: str | None = None
    # A comma-separated string, not a list: pydantic-settings would want JSON for a list.
    api_keys_raw: str = Field(default="", validation_alias="ASSISTANTD_API_KEYS")
    upstream_base_url: str = "https://api.openai.com/v1"
    upstream_api_key: str | None = None
    model_map_raw: str = Field(default="", validation_alias="ASSISTANTD_MODEL_MAP")
    embeddings: str = "local"
    # Where the local embedding model's 8-bit file is made and kept (default: <data_dir>/models).
    model_cache_dir: Path | None = None
    sandbox_image: str = "assistantd-sandbox:latest"
    # Code interpreter sandboxes (one per thread): limits and pool.
    sandbox_memory: str = "512m"
    sandbox_cpus: float = 1.0
    sandbox_pids: int = 128
    sandbox_tmp_size: str = "64m"
    sandbox_data_size: str = "256m"
    sandbox_exec_timeout: float = 60.0
    sandbox_warm_pool: int = 2
    sandbox_idle_seconds: int = 3600

    # Limits (the OpenAI API's own where it has one).
    max_upload_bytes: int = 512 * 1024 * 1024
    max_concurrent_runs: int = 1024  # a run mostly waits on its model: ~0.2 MiB each (bench/load.py --hold)
    run_expiry_seconds: int = 600  # a run left queued or waiting for tool outputs this long expires
    file_sweep_seconds: float = 60.0  # how often each process looks for expired files to delete
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 300.0
    context_windows_raw: str = Field(default="", validation_alias="ASSISTANTD_CONTEXT_WINDOWS")
    log_level: str = "info"
    # How run events reach streams: auto (PostgreSQL LISTEN/NOTIFY when the database is
    # PostgreSQL, so that replicas share runs), local (this process only) or postgres.
    event_bus: str = "auto"

    # Hardening bounds (step 5): nothing a client, sandboxed code or an upstream sends may freeze
    # the server or grow it without bound. Each is in README's configuration table.
    # Requests (JSON bodies; uploads have max_upload_bytes).
    max_request_bytes: int = 8 * 1024 * 1024  # a JSON body above this gets 413 before it is read whole
    max_messages_per_request: int = 32  # messages in POST /threads or /threads/runs
    max_json_values: int = 40_000  # JSON values (objects, arrays, items) in one body; 413 above
    max_json_depth: int = 64  # nesting of any JSON value accepted (tool schemas, metadata...) and stored
    # The code interpreter.
    sandbox_max_output_bytes: int = 64 * 1024  # stdout+stderr bytes kept per execution (head and tail)
    sandbox_max_output_files: int = 20  # files an execution may hand back
    sandbox_max_output_file_bytes: int = 32 * 1024 * 1024  # their bytes, all together
    sandbox_shm_size: str = "1m"  # the sandbox's /dev/shm
    # Both counted over the deployment: every replica on the database, their warm pools included.
    sandbox_max_total: int = 32  # sandboxes (containers) kept at once
    sandbox_max_per_tenant: int = 8  # of them, held by one tenant's threads
    sandbox_wait_seconds: float = 30.0  # a run waits this long for a free sandbox, then its call fails
    # The upstream model.
    upstream_turn_timeout: float = 600.0  # one model turn, from request to the end of its stream
    run_timeout: float = 3600.0  # one run's execution, all turns and tools (waiting for outputs not counted)
    upstream_max_line_bytes: int = 4 * 1024 * 1024  # one SSE line of the model's stream
    # What GETs of runs, vector stores and their files and batches tell the SDKs' *_and_poll helpers
    # to wait before asking again (openai-poll-after-ms; they wait 1 s without it); 0: not sent.
    poll_after_ms: int = 100
    # A run's file_search waits this long (from the run's creation) for the files of the *thread's*
    # vector stores still being ingested, then searches what is ready (OpenAI's documented 60 s).
    file_search_ready_seconds: float = 60.0
    # Which rankings a search fuses: "hybrid" (lexical and vector), or one alone ("lexical",
    # "vector"), to measure each (bench/retrieval.py).
    search_rankings: str = "hybrid"

    @property
    def api_keys(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys_raw.split(",") if k.strip())

    @property
    def model_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.model_map_raw.split(",") if "=" in item)
        return {name.strip(): upstream.strip() for name, upstream in pairs}

    @property
    def context_windows(self) -> dict[str, int]:
        """``ASSISTANTD_CONTEXT_WINDOWS=model=tokens,…``: context sizes for ``auto`` truncation."""
        pairs = (item.split("=", 1) for item in self.context_windows_raw.split(",") if "=" in item)
        return {name.strip(): int(size) for name, size in pairs}

    @property
    def resolved_upstream_api_key(self) -> str | None:
        return self.upstream_api_key or os.environ.get("OPENAI_API_KEY")

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL for the configured database (the driver is ours to pick)."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'assistantd.db').resolve()}"
        for prefix, driver in (
            ("sqlite:", "sqlite+aiosqlite:"),
            ("postgresql:", "postgresql+asyncpg:"),
            ("postgres:", "postgresql+asyncpg:"),
        ):
            if url.startswith(prefix):
                return driver + url[len(prefix):]
        return url


@functools.lru_cache
def get_settings() -> Settings:
    return Settings()
