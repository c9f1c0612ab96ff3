"""Benchmark: what assistantd adds on top of the upstream model (not a test).

Starts the scripted fake upstream and an assistantd server (SQLite in a temp folder), then:

1. time to first text delta, N concurrent streams: straight to the upstream
   (``POST /chat/completions``, first content chunk) vs. through assistantd
   (``POST /threads/{id}/runs`` with ``stream=true``, first ``thread.message.delta``);
   prints p50/p99 of both and the difference;
2. completed runs per second for non-streamed runs (create, then poll until completed) at a
   given concurrency, vs. completions per second straight to the upstream;
3. the official SDK's ``create_and_poll`` wall time for a short run, with the server's
   ``openai-poll-after-ms`` and without it (a second server with ``ASSISTANTD_POLL_AFTER_MS=0``).

    python bench/stream_overhead.py [--concurrency 1,50] [--rounds 10] [--runs 1000] [--poll-runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from assistantd.settings import Settings  # noqa: E402
from bench import openloop  # noqa: E402
from bench.openloop import cpu_seconds, pct  # noqa: E402
from tests.support.server import ServerProcess, free_port  # noqa: E402

# Pollers wait this long between retrieves (the SDK's own default is 1 s; a shorter wait only
# measures the server's polling load, a longer one only measures the wait).
POLL_SECONDS = 0.05
ANSWER = "The answer is forty two, and here is why it is so."


def start_fake() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "assistantd.testing.fake_upstream", "--port", str(port),
                             "--no-record"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/v1"


async def timed_stream(url: str, body: dict, first: bytes, last: bytes) -> float:
    """The seconds until ``first`` appears in the streamed answer (bench/openloop's lean client)."""
    result = await openloop.timed_stream(url, body, first, last, ok_marker=last)
    if result.ttft is None:
        raise RuntimeError(f"no {first!r} in the answer from {url} ({result.error})")
    return result.ttft


async def direct_ttft(http: httpx.AsyncClient, upstream: str) -> float:
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": ANSWER}]}
    return await timed_stream(f"{upstream}/chat/completions", body, b'"content": "You', b"[DONE]")


async def assistantd_ttft(http: httpx.AsyncClient, base: str, thread_id: str, assistant_id: str) -> float:
    return await timed_stream(f"{base}/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True},
                              b"event: thread.message.delta", b"event: done")


async def new_threads(http: httpx.AsyncClient, base: str, n: int) -> list[str]:
    async def one() -> str:
        r = await http.post(f"{base}/threads", json={"messages": [{"role": "user", "content": ANSWER}]})
        return r.json()["id"]
    out = []
    for i in range(0, n, 50):
        out += await asyncio.gather(*(one() for _ in range(min(50, n - i))))
    return out


async def ttft_phase(base: str, upstream: str, concurrency: int, rounds: int) -> tuple[list[float], list[float]]:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        assistant = (await http.post(f"{base}/assistants", json={"model": "gpt-4o", "instructions": "Answer."})).json()
        direct, through = [], []
        # Warm both paths (connections, caches) before measuring.
        await asyncio.gather(*(direct_ttft(http, upstream) for _ in range(concurrency)))
        warm = await new_threads(http, base, concurrency)
        await asyncio.gather(*(assistantd_ttft(http, base, t, assistant["id"]) for t in warm))
        failures = 0
        for _ in range(rounds):
            direct += await asyncio.gather(*(direct_ttft(http, upstream) for _ in range(concurrency)))
            threads = await new_threads(http, base, concurrency)
            results = await asyncio.gather(*(assistantd_ttft(http, base, t, assistant["id"]) for t in threads),
                                           return_exceptions=True)
            through += [r for r in results if isinstance(r, float)]
            failures += sum(not isinstance(r, float) for r in results)
        if failures:
            print(f"  ({failures} streams failed and are left out)")
    return direct, through


async def throughput_phase(base: str, upstream: str, concurrency: int, total: int,
                           server_pid: int, fake_pid: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        assistant = (await http.post(f"{base}/assistants", json={"model": "gpt-4o"})).json()
        threads = await new_threads(http, base, total)
        queue = list(threads)

        async def call(method: str, url: str, **kwargs) -> dict:
            # Like the SDK, retry a request whose pooled connection the server had just closed.
            for attempt in range(3):
                try:
                    return (await http.request(method, url, **kwargs)).json()
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    if attempt == 2:
                        raise

        async def create(thread_id: str) -> tuple[str, str]:
            run = await call("POST", f"{base}/threads/{thread_id}/runs", json={"assistant_id": assistant["id"]})
            return thread_id, run["id"]

        async def creator(todo: list[str], made: list[tuple[str, str]]) -> None:
            while todo:
                made.append(await create(todo.pop(0)))

        # Clients create the runs (at the given concurrency) and do not poll each one: polling
        # every run would mostly measure the polling. The last run made is watched; when it is
        # done, one pass checks every run (waiting for any straggler), outside the timed part.
        server_cpu, fake_cpu = cpu_seconds(server_pid), cpu_seconds(fake_pid)
        start = time.perf_counter()
        made: list[tuple[str, str]] = []
        await asyncio.gather(*(creator(queue, made) for _ in range(concurrency)))
        last_thread, last_run = made[-1]
        while (await call("GET", f"{base}/threads/{last_thread}/runs/{last_run}"))["status"] in ("queued", "in_progress"):
            await asyncio.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - start
        server_cpu, fake_cpu = cpu_seconds(server_pid) - server_cpu, cpu_seconds(fake_pid) - fake_cpu
        completed = 0
        for thread_id, run_id in made:
            run = await call("GET", f"{base}/threads/{thread_id}/runs/{run_id}")
            while run["status"] in ("queued", "in_progress"):
                await asyncio.sleep(POLL_SECONDS)
                run = await call("GET", f"{base}/threads/{thread_id}/runs/{run_id}")
                elapsed = time.perf_counter() - start
            completed += run["status"] == "completed"
        runs_per_s = completed / elapsed

    async def direct_worker(n: int) -> None:
        for _ in range(n):
            await direct_ttft(None, upstream)

    direct_fake_cpu = cpu_seconds(fake_pid)
    start = time.perf_counter()
    await asyncio.gather(*(direct_worker(total // concurrency) for _ in range(concurrency)))
    direct_total = total // concurrency * concurrency
    direct_per_s = direct_total / (time.perf_counter() - start)
    direct_fake_cpu = cpu_seconds(fake_pid) - direct_fake_cpu
    # CPU per run is steadier than runs/s on a shared machine; the upstream's own CPU per
    # completion, measured in the same window, is the yardstick it is compared with.
    return {"runs_per_s": runs_per_s, "direct_per_s": direct_per_s,
            "server_ms": server_cpu / total * 1000, "fake_ms": fake_cpu / total * 1000,
            "direct_fake_ms": direct_fake_cpu / direct_total * 1000}


# A short run for poll_phase: the model's first token after 100 ms, five tokens 5 ms apart. (An
# instant answer can be over before the SDK's first poll, which then finds it completed whatever
# the server says of polling: that figure measured the race, not the wait.)
SHORT_RUN = "[[fake:pace-100-5-5]]"


def poll_phase(base: str, runs: int) -> list[float]:
    """Wall time of the official SDK's ``create_and_poll`` for a short run (~0.13 s of the model's;
    no poll interval given: the SDK waits what ``openai-poll-after-ms`` says, or 1 s without it)."""
    import warnings

    from openai import OpenAI

    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the Assistants API deprecated
    client = OpenAI(base_url=base, api_key="sk-bench")
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Answer.")
    times = []
    for _ in range(runs):
        thread = client.beta.threads.create(messages=[{"role": "user", "content": f"{ANSWER} {SHORT_RUN}"}])
        started = time.perf_counter()
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        times.append(time.perf_counter() - started)
        assert run.status == "completed", run.status
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,50",
                        help="comma-separated stream concurrencies for the first-delta figures; the last "
                             "one is used for the runs/s figure")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--poll-runs", type=int, default=10, help="runs for the SDK create_and_poll figure")
    args = parser.parse_args()

    fake, upstream = start_fake()
    data_dir = Path(tempfile.mkdtemp(prefix="assistantd-bench-"))
    server = ServerProcess(data_dir, args.database_url, ASSISTANTD_UPSTREAM_BASE_URL=upstream,
                           ASSISTANTD_LOG_LEVEL="warning")
    try:
        server.start()
        levels = [int(c) for c in str(args.concurrency).split(",")]
        ms = lambda v: v * 1000  # noqa: E731
        for level in levels:
            rounds = max(args.rounds, 100 // level)  # at least 100 samples per level
            direct, through = asyncio.run(ttft_phase(server.base_url, upstream, level, rounds))
            print(f"time to first text delta, {level} concurrent stream(s), {len(through)} runs:")
            print(f"  upstream direct    p50 {ms(pct(direct, .5)):7.2f} ms   p99 {ms(pct(direct, .99)):7.2f} ms")
            print(f"  through assistantd p50 {ms(pct(through, .5)):7.2f} ms   p99 {ms(pct(through, .99)):7.2f} ms")
            print(f"  added              p50 {ms(pct(through, .5) - pct(direct, .5)):7.2f} ms   "
                  f"p99 {ms(pct(through, .99) - pct(direct, .99)):7.2f} ms   "
                  f"(ratio p50 {pct(through, .5) / pct(direct, .5):.2f}x)")
        args.concurrency = levels[-1]
        t = asyncio.run(throughput_phase(server.base_url, upstream, args.concurrency, args.runs,
                                         server.proc.pid, fake.pid))
        backend = "PostgreSQL" if args.database_url else "SQLite"
        # The SDK's create_and_poll, with the server's poll hint and, from a second server in the
        # same run, without it (ASSISTANTD_POLL_AFTER_MS=0: the SDK's own 1 s between polls).
        silent = ServerProcess(Path(tempfile.mkdtemp(prefix="assistantd-bench-")), args.database_url,
                               ASSISTANTD_UPSTREAM_BASE_URL=upstream, ASSISTANTD_LOG_LEVEL="warning",
                               ASSISTANTD_POLL_AFTER_MS="0", ASSISTANTD_SANDBOX_WARM_POOL="0")
        try:
            silent.start()
            hinted, unhinted = poll_phase(server.base_url, args.poll_runs), poll_phase(silent.base_url, args.poll_runs)
        finally:
            silent.stop()
        print(f"SDK create_and_poll of a short run, {args.poll_runs} runs, wall time p50 (p99):")
        hint = server.env.get("ASSISTANTD_POLL_AFTER_MS") or Settings.model_fields["poll_after_ms"].default
        print(f"  with openai-poll-after-ms {hint}: "
              f"{ms(pct(hinted, .5)):7.1f} ms ({ms(pct(hinted, .99)):.1f})   without it (the SDK's 1 s): "
              f"{ms(pct(unhinted, .5)):7.1f} ms ({ms(pct(unhinted, .99)):.1f})")
        print(f"non-streamed runs, {args.runs} runs at concurrency {args.concurrency} ({backend}):")
        print(f"  completed runs/s  {t['runs_per_s']:8.1f}   upstream completions/s direct {t['direct_per_s']:8.1f}   "
              f"(ratio {t['runs_per_s'] / t['direct_per_s']:.2f})")
        print(f"  CPU per run: assistantd {t['server_ms']:.2f} ms, the upstream {t['fake_ms']:.2f} ms "
              f"(direct: {t['direct_fake_ms']:.2f} ms per completion; assistantd/upstream "
              f"{t['server_ms'] / t['direct_fake_ms']:.1f}x)")
    finally:
        server.stop()
        fake.terminate()


if __name__ == "__main__":
    main()
