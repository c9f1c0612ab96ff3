"""Diagnostic (not a benchmark target): where the time of one streamed run goes, one run at a
time on an idle server — the moment the response headers, ``thread.run.created``,
``thread.run.in_progress``, the first step and the first message delta, and ``done`` arrive,
p50 over 50 runs (after 10 warm-up ones). The upstream's own first-chunk time is printed by
``bench/stream_overhead.py``.

    python bench/stream_phases.py [local|none]     (the ASSISTANTD_EMBEDDINGS of the server)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from stream_overhead import ANSWER, start_fake  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

MARKS = [b"HTTP/1.1 200", b"event: thread.run.created", b"event: thread.run.in_progress",
         b"event: thread.run.step.created", b"event: thread.message.delta", b"event: done"]

async def one(base, thread_id, assistant_id):
    host_port, _, path = base.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    payload = json.dumps({"assistant_id": assistant_id, "stream": True}).encode()
    start = time.perf_counter()
    r, w = await asyncio.open_connection(host, int(port))
    w.write(f"POST /{path}/threads/{thread_id}/runs HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    seen, t = b"", {}
    while True:
        c = await r.read(65536)
        if not c: break
        seen += c
        now = time.perf_counter() - start
        for m in MARKS:
            if m not in t and m in seen: t[m] = now
        if b"event: done" in seen: break
    w.close()
    return t

async def main():
    fake, upstream = start_fake()
    d = Path(tempfile.mkdtemp())
    server = ServerProcess(d, None, ASSISTANTD_UPSTREAM_BASE_URL=upstream, ASSISTANTD_LOG_LEVEL="warning",
                           ASSISTANTD_EMBEDDINGS=sys.argv[1] if len(sys.argv) > 1 else "none")
    server.start()
    base = server.base_url
    try:
        async with httpx.AsyncClient() as http:
            a = (await http.post(f"{base}/assistants", json={"model": "gpt-4o", "instructions": "Answer."})).json()
            res = []
            for i in range(60):
                th = (await http.post(f"{base}/threads", json={"messages": [{"role": "user", "content": ANSWER}]})).json()
                res.append(await one(base, th["id"], a["id"]))
            res = res[10:]
            for m in MARKS:
                vals = [r[m]*1000 for r in res if m in r]
                print(f"{m.decode():35s} p50 {statistics.median(vals):7.2f} ms")
    finally:
        server.stop(); fake.terminate()
asyncio.run(main())
