"""Benchmark: the floor under bench/load.py's CPU and latency figures — not a test, not in CI.

The least a server on this design card (uvicorn with uvloop and httptools, an aiohttp upstream
client, orjson) can do to relay a model's stream as run events: a bare ASGI app, no FastAPI, no
database, no validation, no run, step or message events — a POST answered with an SSE stream that
turns each of the model's content chunks into a ``thread.message.delta`` frame, then a
``thread.run.completed`` frame and ``done``. It answers ``POST /v1/assistants`` and
``POST /v1/threads`` with a made-up id, so bench/load.py's harness drives it unchanged.

It runs the idle and open-loop phases of bench/load.py against this relay instead of assistantd:
the figures printed say what any relay written this way costs beside the model, whatever it
persists. assistantd's own figures are bench/load.py's.

    python bench/relay_floor.py [--streams 20,50] [--seconds 20] [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import load  # noqa: E402
from bench.load import Bench  # noqa: E402
from bench.stream_overhead import start_fake  # noqa: E402
from tests.support.server import free_port  # noqa: E402

DELTA_HEAD = b'event: thread.message.delta\ndata: {"id":"msg_floor","object":"thread.message.delta","delta":{"content":[{"index":0,"type":"text","text":{"value":'
DELTA_TAIL = b'}}]}}\n\n'
END = b"event: thread.run.completed\ndata: {}\n\nevent: done\ndata: [DONE]\n\n"


def relay_app(upstream: str):
    import aiohttp
    import orjson

    session: list[aiohttp.ClientSession] = []
    url = upstream + "/chat/completions"

    async def body_of(receive) -> bytes:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        return body

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = await body_of(receive)
        path = scope["path"]
        if not path.endswith("/runs"):  # /v1/assistants, /v1/threads: an id, the thread's naming its tag
            tag = re.search(rb"\[\[fake:([^\]]+)\]\]", body)
            made = b'{"id": "floor~%s~%d"}' % (tag.group(1) if tag else b"", time.monotonic_ns())
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": made})
            return
        tag = path.split("~")[1]
        if not session:
            session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)))
        request = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                   "messages": [{"role": "system", "content": "Answer."},
                                {"role": "user", "content": f"Hi [[fake:{tag}]]"}]}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        async with session[0].post(url, data=orjson.dumps(request),
                                   headers={"Content-Type": "application/json"}) as response:
            buffer = b""
            async for data in response.content.iter_any():
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: {"):
                        continue
                    chunk = orjson.loads(line[6:])
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            await send({"type": "http.response.body", "more_body": True,
                                        "body": DELTA_HEAD + orjson.dumps(content) + DELTA_TAIL})
        await send({"type": "http.response.body", "body": END})

    return app


class Relay:
    """What bench/load.py's Bench needs of a server: its base URL and its process."""

    def __init__(self, upstream: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port), "--upstream", upstream])
        for _ in range(300):
            try:
                httpx.post(f"{self.base_url}/assistants", json={}, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the relay did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="20,50")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle-runs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--chunks", type=int, default=load.CHUNKS, help="pieces of the model's answer")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvicorn
        uvicorn.run(relay_app(args.upstream), port=args.serve, log_level="warning", timeout_keep_alive=75)
        return

    load.set_chunks(args.chunks)
    fake, upstream = start_fake()
    relay = None
    try:
        relay = Relay(upstream)
        bench = Bench(relay, fake.pid, upstream)  # type: ignore[arg-type]
        bench.label = "the relay"
        asyncio.run(bench.setup())
        print("the bare relay (no FastAPI, no database, deltas only):", flush=True)
        for tag in (f"pace-100-5-{load.CHUNKS}", f"pace-0-0-{load.CHUNKS}"):
            print(asyncio.run(bench.idle(tag, args.idle_runs)).report(), flush=True)
        asyncio.run(bench.open(10, 5, args.seed))  # warm-up
        for n in [int(v) for v in args.streams.split(",")]:
            print(asyncio.run(bench.open(n, args.seconds, args.seed + n, " (bare relay)")).report(), flush=True)
    finally:
        if relay is not None:
            relay.proc.terminate()
        fake.terminate()


if __name__ == "__main__":
    main()
