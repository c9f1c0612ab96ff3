"""The code-interpreter kernel: a long-lived Python process inside the sandbox container.

It reads one JSON request per line on stdin and answers one JSON line on stdout, so the server
reaches it without starting a process per call (``docker attach``). State lives in one globals
dict, like a notebook kernel: variables, imports and files under /mnt/data persist between
calls until the container is reaped.

Requests:
    {"op": "exec", "id": n, "code": "..."}
        → {"id", "ok", "stdout", "stderr", "error": null | {"name", "value", "traceback"},
           "images": [{"name", "data" (base64 PNG)}], "files": [{"path", "data" (base64)}]}
    {"op": "put_file", "id": n, "path": "/mnt/data/x.csv", "data": base64}   → {"id", "ok"}
    {"op": "ping", "id": n}                                                  → {"id", "ok"}
    {"op": "preload", "id": n}   (import numpy, pandas, matplotlib now)       → {"id", "ok"}

``files`` are the files under /mnt/data that the code created or changed (at most
``max_files`` of them and ``max_file_bytes`` together, given with each exec request). SIGINT
interrupts a running execution (KeyboardInterrupt) and keeps the state.

Bounds: the answers go out on a private copy of the original stdout; while code runs, fds 1 and 2
are pipes that a reader thread drains, keeping at most ``max_output_bytes`` (head and tail, the
rest counted and dropped), so ``print``, ``os.write(1, …)``, C extensions and subprocesses are all
captured and none can grow the answer. When an execution ends, every other process in the
container is killed (the kernel is PID 1 of the container's namespace) and all children are
reaped, so nothing started by code outlives its cell and a fork bomb leaves no zombies behind.
"""

import ast
import base64
import io
import json
import os
import signal
import sys
import threading
import time
import traceback

DATA = "/mnt/data"
MAX_OUTPUT_BYTES = 64 * 1024  # the defaults; each exec request carries the server's settings
MAX_FILES = 20
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TRACEBACK_CHARS = 20_000

_protocol = os.dup(1)  # the answers' channel; fds 1 and 2 are the code's, captured per execution
_devnull = os.open(os.devnull, os.O_RDWR)
_globals = {"__name__": "__main__", "__builtins__": __builtins__}


_preloaded = False


def _preload():
    # Import the heavy libraries once, before the first request (the pool starts kernels ahead).
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    for name in ("numpy", "pandas", "matplotlib"):
        try:
            __import__(name)
        except Exception:
            pass
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except Exception:
        pass


def _snapshot():
    seen = {}
    for root, _dirs, files in os.walk(DATA):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            seen[path] = (st.st_mtime_ns, st.st_size)
    return seen


def _figures():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        try:
            plt.figure(number).savefig(buffer, format="png", bbox_inches="tight")
            images.append({"name": f"figure-{number}.png",
                           "data": base64.b64encode(buffer.getvalue()).decode()})
        except Exception:
            pass
    plt.close("all")
    return images


def _clip(text, limit=MAX_TRACEBACK_CHARS):
    if len(text) <= limit:
        return text
    return text[: limit // 2] + "\n...[output truncated]...\n" + text[-limit // 2:]


def _run(code):
    """Execute like a notebook cell: the value of a final expression is printed."""
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), _globals)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), _globals)
        if value is not None:
            print(repr(value))


class _Capture:
    """One stream of the running code (fd 1 or 2): a pipe drained by a thread that keeps the
    first and last ``limit // 2`` bytes and counts the rest."""

    def __init__(self, fd, limit):
        self.fd, self.half = fd, max(1, limit // 2)
        self.head, self.tail, self.dropped = bytearray(), bytearray(), 0
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self._thread = threading.Thread(target=self._drain, args=(read_end,), daemon=True)
        self._thread.start()

    def _drain(self, read_end):
        while True:
            data = os.read(read_end, 1 << 16)
            if not data:
                break
            room = self.half - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            if data:
                self.tail += data
                if len(self.tail) > self.half:
                    self.dropped += len(self.tail) - self.half
                    del self.tail[: len(self.tail) - self.half]
        os.close(read_end)

    def finish(self):
        """Stop capturing (the pipe's write end is closed once no process holds it) → text."""
        os.dup2(_devnull, self.fd)
        self._thread.join(5)
        text = bytes(self.head)
        if self.dropped:
            text += f"\n...[{self.dropped} bytes of output dropped]...\n".encode()
        text += bytes(self.tail)
        # A lone surrogate printed by the code arrives as its UTF-8-like bytes: decoded with
        # replacement, the text holds U+FFFD instead.
        return text.decode("utf-8", "replace"), self.dropped


def _end_leftovers():
    """Kill every process the code left running and reap every child (zombies included).

    The kernel is PID 1 of the container's pid namespace: ``kill(-1)`` reaches every other
    process there and never the kernel itself.
    """
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:  # no other process
            pass
    deadline = time.monotonic() + 2
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if os.getpid() != 1 or time.monotonic() > deadline:
                return
            time.sleep(0.01)


def execute(code, max_output_bytes=MAX_OUTPUT_BYTES, max_files=MAX_FILES, max_file_bytes=MAX_FILE_BYTES):
    before = _snapshot()
    error = None
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = _Capture(1, max_output_bytes // 2), _Capture(2, max_output_bytes // 2)
    try:
        _run(code)
    except BaseException as exc:  # KeyboardInterrupt (an interrupt), SystemExit, MemoryError too
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        # Drop the kernel's own frames: the user's traceback starts at their cell.
        lines = [line for line in tb if 'kernel.py"' not in line]
        error = {"name": type(exc).__name__, "value": str(exc), "traceback": _clip("".join(lines))}
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        _end_leftovers()
        stdout, dropped_out = out.finish()
        stderr, dropped_err = err.finish()
    files, notes, total = [], [], 0
    for path, stamp in sorted(_snapshot().items()):
        if before.get(path) == stamp:
            continue
        try:
            size = os.path.getsize(path)
            if len(files) >= max_files:
                notes.append(f"{path} not returned: more than {max_files} files were written")
                continue
            if total + size > max_file_bytes:
                notes.append(f"{path} not returned: the files written pass {max_file_bytes} bytes together")
                continue
            with open(path, "rb") as f:
                files.append({"path": path, "data": base64.b64encode(f.read()).decode()})
            total += size
        except OSError:
            pass
    return {"ok": error is None, "stdout": stdout, "stderr": stderr, "error": error,
            "images": _figures(), "files": files, "notes": notes,
            "dropped_bytes": dropped_out + dropped_err}


def put_file(path, data):
    path = os.path.normpath(path)
    if not path.startswith(DATA + "/"):
        raise ValueError("files go under /mnt/data")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
    return {"ok": True}


def answer(message):
    data = (json.dumps(message) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(_protocol, view):]


def _requests():
    """Request lines from stdin. While nothing is asked for half a second, the kernel preloads
    the heavy libraries (a cold start answers its first call at once; a warm-pool kernel is
    ready before it is used)."""
    import select

    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
        try:
            if not _preloaded:
                ready, _, _ = select.select([0], [], [], 0.5)
                if not ready:
                    _preload()
                    continue
            chunk = os.read(0, 1 << 20)
        except KeyboardInterrupt:  # an interrupt that came after the execution it was meant for
            continue
        if not chunk:
            return  # stdin closed: the server is gone
        buffer += chunk


def main():
    # The code's streams: fds 1 and 2 point at /dev/null between executions (captured during
    # one); Python's own objects encode a lone surrogate instead of raising on it.
    os.dup2(_devnull, 1)
    os.dup2(_devnull, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0, closefd=False), encoding="utf-8",
                                  errors="surrogatepass", line_buffering=True, write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0, closefd=False), encoding="utf-8",
                                  errors="surrogatepass", line_buffering=True, write_through=True)
    os.makedirs(DATA, exist_ok=True)
    os.chdir(DATA)
    for line in _requests():
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            op = request.get("op")
            if op == "exec":
                result = execute(request["code"], **request.get("limits", {}))
            elif op == "put_file":
                result = put_file(request["path"], request["data"])
            elif op == "ping":
                result = {"ok": True}
            elif op == "preload":  # a warm-pool kernel: ready for code only once its imports are done
                _preload()
                result = {"ok": True}
            else:
                result = {"ok": False, "error": {"name": "ProtocolError", "value": f"unknown op {op!r}",
                                                 "traceback": ""}}
        except KeyboardInterrupt:
            result = {"ok": False, "error": {"name": "KeyboardInterrupt", "value": "interrupted",
                                             "traceback": ""}}
        except Exception as exc:
            result = {"ok": False, "error": {"name": type(exc).__name__, "value": str(exc),
                                             "traceback": traceback.format_exc()}}
        result["id"] = request_id
        answer(result)


if __name__ == "__main__":
    main()
