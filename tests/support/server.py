"""A real assistantd server in a subprocess, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


# One home for the local embedding model's derived file, shared by every server a test or a
# benchmark starts (each has its own data dir; making the file takes about two seconds).
MODELS_DIR = Path(tempfile.gettempdir()) / "assistantd-test-models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``assistantd serve`` with its own data dir and database; restartable, killable."""

    def __init__(self, data_dir: Path, database_url: str | None = None, *, serve_args: tuple[str, ...] = (),
                 **env: str) -> None:
        """``serve_args``: more arguments for ``assistantd serve`` (``("--workers", "2")``)."""
        self.data_dir, self.serve_args = data_dir, serve_args
        self.port = free_port()
        self.env = {**os.environ, "ASSISTANTD_DATA_DIR": str(data_dir), **env}
        self.env.setdefault("ASSISTANTD_MODEL_CACHE_DIR", str(MODELS_DIR))
        self.env.pop("ASSISTANTD_DATABASE_URL", None)
        if database_url:
            self.env["ASSISTANTD_DATABASE_URL"] = database_url
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistantd", "serve", "--port", str(self.port), *self.serve_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""
