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

``files`` are the files under /mnt/data that the code created or changed. SIGINT interrupts a
running execution (KeyboardInterrupt) and keeps the state.
"""

import ast
import base64
import contextlib
import io
import json
import os
import sys
import traceback

DATA = "/mnt/data"
MAX_OUTPUT_CHARS = 20_000
MAX_FILE_BYTES = 50 * 1024 * 1024

_stdout = sys.stdout
_globals = {"__name__": "__main__", "__builtins__": __builtins__}


def _preload():
    # Import the heavy libraries once, before the first request (the pool starts kernels ahead).
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


def _clip(text):
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[: MAX_OUTPUT_CHARS // 2] + "\n...[output truncated]...\n" + text[-MAX_OUTPUT_CHARS // 2:]


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


def execute(code):
    before = _snapshot()
    out, err = io.StringIO(), io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _run(code)
    except BaseException as exc:  # KeyboardInterrupt (an interrupt), SystemExit, MemoryError too
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        # Drop the kernel's own frames: the user's traceback starts at their cell.
        lines = [line for line in tb if 'kernel.py"' not in line]
        error = {"name": type(exc).__name__, "value": str(exc), "traceback": _clip("".join(lines))}
    files = []
    for path, stamp in sorted(_snapshot().items()):
        if before.get(path) == stamp:
            continue
        try:
            if os.path.getsize(path) > MAX_FILE_BYTES:
                continue
            with open(path, "rb") as f:
                files.append({"path": path, "data": base64.b64encode(f.read()).decode()})
        except OSError:
            pass
    return {"ok": error is None, "stdout": _clip(out.getvalue()), "stderr": _clip(err.getvalue()),
            "error": error, "images": _figures(), "files": files}


def put_file(path, data):
    path = os.path.normpath(path)
    if not path.startswith(DATA + "/"):
        raise ValueError("files go under /mnt/data")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
    return {"ok": True}


def answer(message):
    _stdout.write(json.dumps(message) + "\n")
    _stdout.flush()


def _requests():
    """Request lines from stdin. While nothing is asked for half a second, the kernel preloads
    the heavy libraries (a cold start answers its first call at once; a warm-pool kernel is
    ready before it is used)."""
    import select

    buffer, preloaded = b"", False
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
        try:
            if not preloaded:
                ready, _, _ = select.select([0], [], [], 0.5)
                if not ready:
                    _preload()
                    preloaded = True
                    continue
            chunk = os.read(0, 1 << 20)
        except KeyboardInterrupt:  # an interrupt that came after the execution it was meant for
            continue
        if not chunk:
            return  # stdin closed: the server is gone
        buffer += chunk


def main():
    os.makedirs(DATA, exist_ok=True)
    os.chdir(DATA)
    for line in _requests():
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            op = request.get("op")
            if op == "exec":
                result = execute(request["code"])
            elif op == "put_file":
                result = put_file(request["path"], request["data"])
            elif op == "ping":
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
