"""One sandbox: a locked-down Docker container running the kernel (docker/sandbox/kernel.py),
reached over ``docker attach`` (its stdin/stdout) — no network, no process per call.

Blocking Docker calls run in worker threads; :meth:`Sandbox.execute` is the async surface.

Any client of the Docker engine can attach to a running sandbox, so a sandbox started by one
server process can be used by another (:meth:`Sandbox.existing`); the pool lets one process at a
time do so, and every request carries an id of its own, so an answer meant for another client
that is (still) attached is never taken for ours.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from assistantd.api.text import repair_json

log = logging.getLogger("assistantd.sandbox")

LABEL = "assistantd.sandbox"


@dataclass(frozen=True)
class SandboxLimits:
    """Each limit is a setting (ASSISTANTD_SANDBOX_*, defaults in :mod:`assistantd.settings`)."""

    memory: str
    cpus: float
    pids: int
    tmp_size: str
    data_size: str
    exec_timeout: float
    shm_size: str = "1m"
    max_output_bytes: int = 64 * 1024  # stdout + stderr kept per execution
    max_output_files: int = 20
    max_output_file_bytes: int = 32 * 1024 * 1024  # all the files of one execution together

    @property
    def max_answer_bytes(self) -> int:
        """The longest answer line the kernel may send: its output (a byte may become a 6-byte
        JSON escape), its files in base64, and room for figures and a traceback."""
        return 8 * self.max_output_bytes + 2 * self.max_output_file_bytes + 32 * 1024 * 1024

    def kernel_limits(self) -> dict[str, int]:
        return {"max_output_bytes": self.max_output_bytes, "max_files": self.max_output_files,
                "max_file_bytes": self.max_output_file_bytes}


class KernelDied(Exception):
    """The kernel process ended (out of memory, killed) or stopped answering."""


class AnswerTooLarge(KernelDied):
    """Something in the sandbox wrote more to the kernel's channel than an answer may hold."""


class Abandoned(Exception):
    """This client let the sandbox go (another process uses it now): its call ends, and nothing
    of the sandbox — its kernel above all — may be touched."""


class Sandbox:
    def __init__(self, client, image: str, limits: SandboxLimits, labels: dict[str, str],
                 name: str | None = None) -> None:
        self.client, self.image, self.limits, self.labels, self.name = client, image, limits, labels, name
        self.container = None
        self._sock = None
        self._partial: list[bytes] = []  # pieces of the stdout line not yet complete
        self._partial_size = 0
        self._lines: list[bytes] = []
        self._token = os.urandom(4).hex()  # request ids are "<token>-<n>": unique to this client
        self._next_id = 1
        self._last_id: str | None = None
        self._abandoned = False
        self._lock = threading.Lock()  # one request at a time on the channel
        self.thread_id: str | None = None
        self.tenant: str | None = None
        self.busy = 0  # calls in progress (a busy sandbox is never evicted or reaped)
        self.placed_files: set[str] = set()
        self.last_used = time.monotonic()

    # --- lifecycle (blocking; call through to_thread) --------------------------------------------

    def start(self) -> "Sandbox":
        limits = self.limits
        self.container = self.client.containers.create(
            self.image,
            stdin_open=True,
            tty=False,
            detach=True,
            network_mode="none",
            user="1000:1000",
            read_only=True,
            working_dir="/mnt/data",
            tmpfs={"/tmp": f"size={limits.tmp_size},mode=1777",
                   "/mnt/data": f"size={limits.data_size},uid=1000,gid=1000,mode=0755"},
            shm_size=limits.shm_size,  # /dev/shm: tiny, so it is no way around the tmpfs sizes
            mem_limit=limits.memory,
            memswap_limit=limits.memory,  # no swap
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            environment={"HOME": "/tmp", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
                         # BLAS would start a thread per host CPU, each counted against the pids
                         # limit, though the container may use only ``cpus`` of them.
                         **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"),
                                         str(max(1, math.ceil(limits.cpus))))},
            labels={LABEL: "1", **self.labels},
            name=self.name,
        )
        self._attach()
        self.container.start()
        self._request({"op": "ping"}, timeout=60)  # answered once the kernel has preloaded
        return self

    @classmethod
    def existing(cls, client, name: str, limits: SandboxLimits) -> "Sandbox":
        """A running sandbox (maybe started by another process), attached to its kernel now.
        Raises ``docker.errors.NotFound`` when the container is gone."""
        sandbox = cls(client, "", limits, {}, name)
        sandbox.container = client.containers.prepare_model({"Id": name})
        sandbox._attach()
        return sandbox

    @property
    def label(self) -> str:
        return self.name or self.container.id[:12]

    def detach(self) -> None:
        """Stop listening to the kernel (the container and its state stay)."""
        self._close_socket()

    def abandon(self) -> None:
        """Let go at once, from any thread: a call reading the channel ends with :class:`Abandoned`
        (the socket is shut down, which wakes it) and is not followed by a restart."""
        self._abandoned = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _attach(self) -> None:
        raw = self.client.api.attach_socket(
            self.container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._sock = getattr(raw, "_sock", raw)
        self._partial, self._partial_size, self._lines = [], 0, []

    def restart(self) -> None:
        """A fresh kernel in the same container (its state and /mnt/data are lost)."""
        if self._abandoned:
            raise Abandoned("the sandbox was let go; it is not restarted")
        try:
            self.container.kill()
        except Exception as exc:  # already stopped (the kernel died: out of memory, killed)
            log.debug("killing sandbox %s: %s", self.label, exc)
        self.container.wait(timeout=10)
        self._close_socket()
        self._attach()
        self.container.start()
        self.placed_files.clear()
        self._request({"op": "ping"}, timeout=60)

    def remove(self) -> None:
        self._close_socket()
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception as exc:  # already gone
                log.debug("removing sandbox %s: %s", self.label, exc)

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    # --- the channel -----------------------------------------------------------------------------

    def _request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._lock:
            if self._abandoned:
                raise Abandoned("the sandbox was let go")
            request_id = self._last_id = f"{self._token}-{self._next_id}"
            self._next_id += 1
            line = json.dumps({**payload, "id": request_id}).encode() + b"\n"
            try:
                self._sock.sendall(line)
            except OSError as exc:
                if self._abandoned:
                    raise Abandoned("the sandbox was let go") from exc
                raise KernelDied(f"the kernel is gone ({exc})") from exc
            deadline = time.monotonic() + timeout
            while True:
                message = self._read_line(deadline)
                try:
                    answer = json.loads(message)
                except ValueError:
                    log.debug("sandbox said: %r", message[:200])
                    continue
                if answer.get("id") == request_id:
                    return answer

    def _read_line(self, deadline: float) -> bytes:
        while not self._lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            try:
                header = self._recv_exactly(8)
            except socket.timeout:
                raise TimeoutError from None
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            data = self._recv_exactly(size)
            if kind == 1:  # stdout carries the answers; stderr is the kernel's own noise
                # Only the new frame is scanned: an answer carrying a large file arrives in
                # hundreds of frames, and re-splitting the whole buffer each time is quadratic.
                while (newline := data.find(b"\n")) >= 0:
                    line = b"".join(self._partial) + data[:newline]
                    self._partial, self._partial_size, data = [], 0, data[newline + 1:]
                    if line.strip():
                        self._lines.append(line)
                if data:
                    self._partial.append(data)
                    self._partial_size += len(data)
                    if self._partial_size > self.limits.max_answer_bytes:
                        # Only code writing to the kernel's own channel gets here: the kernel
                        # bounds what it sends. The buffer is dropped, the kernel restarted.
                        self._partial, self._partial_size = [], 0
                        raise AnswerTooLarge(f"the kernel's answer passed {self.limits.max_answer_bytes} bytes")
            else:
                log.debug("sandbox stderr: %r", data[:500])
        return self._lines.pop(0)

    def _recv_exactly(self, size: int) -> bytes:
        chunks, got = [], 0
        while got < size:
            chunk = self._sock.recv(size - got)
            if not chunk:
                if self._abandoned:
                    raise Abandoned("the sandbox was let go")
                raise KernelDied("the kernel exited (out of memory or killed)")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def execute_blocking(self, code: str) -> dict[str, Any]:
        """Run ``code``; on timeout interrupt it (state kept), and restart the kernel if it
        does not stop or has died (state lost). The answer says which happened."""
        self.last_used = time.monotonic()
        try:
            answer = self._request({"op": "exec", "code": code, "limits": self.limits.kernel_limits()},
                                   timeout=self.limits.exec_timeout)
            return repair_json(answer)
        except TimeoutError:
            try:
                self.container.kill(signal="SIGINT")
                answer = repair_json(self._request_pending(timeout=3))
                answer["timed_out"] = True
                value = (f"Execution exceeded the {self.limits.exec_timeout:g} s time limit "
                         "(ASSISTANTD_SANDBOX_EXEC_TIMEOUT) and was interrupted; the kernel's state "
                         "(variables, files) was kept.")
                # Where the code was when it was stopped stays; the interrupt's own last line
                # ("KeyboardInterrupt") gives way to the limit that was hit.
                trace = ((answer.get("error") or {}).get("traceback") or "").rstrip("\n")
                if trace.endswith("KeyboardInterrupt"):
                    trace = trace[: -len("KeyboardInterrupt")]
                answer["error"] = {"name": "TimeoutError", "value": value,
                                   "traceback": f"{trace}TimeoutError: {value}" if trace.strip() else ""}
                return answer
            except Exception as exc:  # TimeoutError, KernelDied, or the engine refused the signal
                if self._abandoned:
                    raise Abandoned("the sandbox was let go") from exc
                log.warning("sandbox %s: interrupting the execution failed (%r); restarting the kernel",
                            self.label, exc)
                self.restart()
                return {"ok": False, "timed_out": True, "restarted": True, "stdout": "", "stderr": "",
                        "error": {"name": "TimeoutError", "traceback": "",
                                  "value": f"Execution exceeded the {self.limits.exec_timeout:g} s time limit "
                                           "(ASSISTANTD_SANDBOX_EXEC_TIMEOUT) and did not stop when "
                                           "interrupted; the kernel was restarted and its state (variables, "
                                           "files) was lost."},
                        "images": [], "files": []}
        except KernelDied as exc:
            if self._abandoned:
                raise Abandoned("the sandbox was let go") from exc
            status = "its channel was flooded" if isinstance(exc, AnswerTooLarge) else self._exit_status()
            log.warning("sandbox %s: kernel restarted (%s)", self.label, status)
            self.restart()
            return {"ok": False, "restarted": True, "stdout": "", "stderr": "", "images": [], "files": [],
                    "error": {"name": "KernelDied", "traceback": "",
                              "value": f"The kernel died ({status}); it was restarted and its state "
                                       f"(variables, files) was lost. {exc}"}}
        finally:
            self.last_used = time.monotonic()

    def _request_pending(self, timeout: float) -> dict[str, Any]:
        """The answer to the request already sent (after an interrupt)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                answer = json.loads(self._read_line(deadline))
                if answer.get("id") == self._last_id:
                    return answer

    def _exit_status(self) -> str:
        try:
            self.container.wait(timeout=5)  # the stream closes a moment before the state is final
            self.container.reload()
            state = self.container.attrs.get("State", {})
            if state.get("OOMKilled"):
                return "out of memory"
            return f"exit code {state.get('ExitCode')}"
        except Exception:
            return "unknown cause"

    def preload_blocking(self) -> None:
        """Have the kernel import its heavy libraries now."""
        self._request({"op": "preload"}, timeout=120)

    def put_file_blocking(self, path: str, data: bytes) -> None:
        answer = self._request({"op": "put_file", "path": path, "data": base64.b64encode(data).decode()},
                               timeout=60)
        if not answer.get("ok"):
            raise OSError(answer.get("error", {}).get("value", "could not place the file"))

    # --- async surface ---------------------------------------------------------------------------

    async def execute(self, code: str) -> dict[str, Any]:
        return await to_thread.run_sync(self.execute_blocking, code)

    async def put_file(self, path: str, data: bytes) -> None:
        await to_thread.run_sync(self.put_file_blocking, path, data)
