"""Benchmark: the server CPU a streamed run costs with each event bus, on PostgreSQL (not a test).

Three set-ups, each on a fresh database of the PostgreSQL server at ``--database-url`` (a URL of
a server where databases may be created, e.g. ``$ASSISTANTD_TEST_POSTGRES_URL``):

- ``local``: one process, ``ASSISTANTD_EVENT_BUS=local`` (the in-process bus);
- ``postgres``: one process, the PostgreSQL bus (the default there): the runs it creates it also
  claims, so their events stay in the process;
- ``2 processes``: a front with no room for runs (``ASSISTANTD_MAX_CONCURRENT_RUNS=0``) where the
  streams are opened, and a process that executes the runs: every event goes through NOTIFY. The
  CPU of both is counted.

    python bench/replica_bus.py --database-url postgresql://postgres:pw@127.0.0.1:5432/postgres [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from stream_overhead import ANSWER, cpu_seconds, start_fake, timed_stream  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


async def admin(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def streamed_runs(front: str, runs: int, concurrency: int) -> float:
    """Stream ``runs`` runs through ``front`` (``concurrency`` at a time); return the seconds."""
    async with httpx.AsyncClient(timeout=60) as http:
        assistant = (await http.post(f"{front}/assistants", json={"model": "gpt-4o"})).json()["id"]

        async def one() -> None:
            thread = (await http.post(f"{front}/threads",
                                      json={"messages": [{"role": "user", "content": ANSWER}]})).json()["id"]
            await timed_stream(f"{front}/threads/{thread}/runs", {"assistant_id": assistant, "stream": True},
                               b"event: thread.message.delta", b"event: done")

        async def worker(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(worker(2) for _ in range(concurrency)))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(worker(runs // concurrency) for _ in range(concurrency)))
        return time.perf_counter() - start


def measure(name: str, server_url: str, upstream: str, runs: int, concurrency: int, two: bool,
            bus: str) -> None:
    db = f"assistantd_bench_{secrets.token_hex(4)}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{db}"'))
    url = f"{server_url.rsplit('/', 1)[0]}/{db}"
    data = Path(tempfile.mkdtemp(prefix="assistantd-bench-"))
    env = {"ASSISTANTD_UPSTREAM_BASE_URL": upstream, "ASSISTANTD_LOG_LEVEL": "warning",
           "ASSISTANTD_EMBEDDINGS": "none", "ASSISTANTD_SANDBOX_WARM_POOL": "0", "ASSISTANTD_EVENT_BUS": bus}
    executor = ServerProcess(data / "executor", url, **env)
    servers = [executor]
    if two:
        servers.insert(0, ServerProcess(data / "front", url, ASSISTANTD_MAX_CONCURRENT_RUNS="0", **env))
    try:
        for server in servers:
            server.start()
        before = [cpu_seconds(s.proc.pid) for s in servers]
        done = runs // concurrency * concurrency
        elapsed = asyncio.run(streamed_runs(servers[0].base_url, done, concurrency))
        used = [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before)]
        each = f"  (front {used[0] / done * 1000:.2f} + executor {used[1] / done * 1000:.2f})" if two else ""
        print(f"  {name:<14} {sum(used) / done * 1000:7.2f} ms server CPU per run   {done / elapsed:6.1f} runs/s{each}")
    finally:
        for server in servers:
            server.stop()
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--only", default="local,postgres,two", help="which set-ups, comma-separated")
    args = parser.parse_args()
    fake, upstream = start_fake()
    try:
        print(f"streamed runs ({args.runs} at concurrency {args.concurrency}, ~13 text deltas each), PostgreSQL:")
        for which in args.only.split(","):
            if which == "local":
                measure("local bus", args.database_url, upstream, args.runs, args.concurrency, False, "local")
            elif which == "postgres":
                measure("postgres bus", args.database_url, upstream, args.runs, args.concurrency, False, "postgres")
            elif which == "two":
                measure("2 processes", args.database_url, upstream, args.runs, args.concurrency, True, "postgres")
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
