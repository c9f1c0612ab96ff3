"""Benchmark: what the composed stack serves (issue 13) — not a test, not in CI.

For each replica count N: builds the images (docker/build-offline.sh, cached), brings up
docker/compose.yaml with N assistantd replicas behind the front and the scripted fake model as a
service (tests/support/compose.py, published on loopback only), waits for health, then for each
load level K sends **open-loop** Poisson arrivals of streamed runs (``POST /v1/threads/{id}/runs``
with ``stream: true``, through the front; threads made beforehand) at the rate that keeps about K
streams open at once, for ``--seconds``; then the same arrival schedule straight to the fake model
(``POST /v1/chat/completions`` streamed) for the direct figure. The model answers at a realistic
pace: first chunk after 100 ms, then one every 50 ms, 20 chunks (~1.1 s a stream).

Printed per N and K: streams open on average (measured), completed streams, errors, time to the
first ``thread.message.delta`` through the stack vs. the first content chunk direct, p50/p99 and
their difference; CPU seconds per streamed run of all assistantd replicas together, of PostgreSQL
and of the front, beside the fake model's CPU per stream when called directly (the yardstick, same
run); each replica's memory; the load average before/after (the machine is shared). Container CPU
and memory are read from the cgroup files (the Docker API's stats as the fallback). Afterwards
``compose down -v``, always.

    python bench/compose_load.py [--replicas 1,2] [--streams 10,25,50,100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.openloop import Result, loadavg, mean_open, open_loop, pct, poisson, timed_stream  # noqa: E402
from tests.support.compose import Stack, build_images  # noqa: E402

TAG = "pace"


# --- container CPU and memory ------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_seconds(container) -> float:
    """CPU time the container has used so far (cgroup v1 or v2 files; else the Docker API)."""
    cid = container.id
    text = _read(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
    if text is not None:
        return int(text) / 1e9
    text = _read(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
    if text is not None:
        usage = dict(line.split() for line in text.splitlines())
        return int(usage["usage_usec"]) / 1e6
    return container.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


def memory_mib(container) -> float:
    """The container's memory as `docker stats` shows it (usage less inactive file cache)."""
    cid = container.id
    usage = _read(f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes")
    if usage is not None:
        stat = dict(line.split() for line in (_read(f"/sys/fs/cgroup/memory/docker/{cid}/memory.stat") or "").splitlines())
        return (int(usage) - int(stat.get("total_inactive_file", 0))) / 2**20
    usage = _read(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current")
    if usage is not None:
        stat = dict(line.split() for line in (_read(
            f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.stat") or "").splitlines())
        return (int(usage) - int(stat.get("inactive_file", 0))) / 2**20
    mem = container.stats(stream=False)["memory_stats"]
    return (mem["usage"] - mem.get("stats", {}).get("total_inactive_file", 0)) / 2**20


def cpu_by_service(stack: Stack) -> dict[str, float]:
    out: dict[str, float] = {}
    for service in ("assistantd", "postgres", "front", "fake-upstream"):
        out[service] = sum(cpu_seconds(c) for c in stack.containers(service))
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores so far (/proc/stat): how busy the whole machine was,
    every other job on it included."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# --- one load level ----------------------------------------------------------------------------

@dataclass
class Level:
    replicas: int
    streams: int
    rate: float
    arrivals: int
    through: list[Result] = field(default_factory=list)
    direct: list[Result] = field(default_factory=list)
    wall: float = 0.0
    machine_busy: float = 0.0
    open_through: float = 0.0
    open_direct: float = 0.0
    lag: float = 0.0
    cpu_through: dict[str, float] = field(default_factory=dict)
    cpu_direct: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    memory: list[float] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""


async def make_threads(front: str, n: int) -> list[str]:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=front, timeout=60, limits=limits,
                                 headers={"Authorization": "Bearer sk-local"}) as http:
        async def one() -> str:
            for attempt in range(3):
                try:
                    r = await http.post("/v1/threads", json={"messages": [
                        {"role": "user", "content": f"Tell me a story [[fake:{TAG}]]"}]})
                    r.raise_for_status()
                    return r.json()["id"]
                except (httpx.TransportError, httpx.HTTPStatusError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5)
            raise AssertionError("unreachable")
        out: list[str] = []
        for i in range(0, n, 16):
            out += await asyncio.gather(*(one() for _ in range(min(16, n - i))))
        return out


async def run_level(stack: Stack, fake: str, assistant_id: str, level: Level, seconds: float,
                    turn: dict, seed: int) -> None:
    arrivals = poisson(level.rate, seconds, seed)
    level.arrivals = len(arrivals)
    threads = await make_threads(stack.url, len(arrivals))
    async with httpx.AsyncClient(timeout=60) as http:  # one scripted turn per stream, both paths
        todo = 2 * len(arrivals) + 10
        while todo > 0:
            (await http.post(f"{fake}/__fake/script", json={"tag": TAG, "turns": [turn] * min(todo, 1000)})).raise_for_status()
            todo -= 1000
    await asyncio.sleep(2)  # let the thread writes settle before measuring

    runs_url = f"{stack.url}/v1/threads/{{}}/runs"
    direct_url = f"{fake}/v1/chat/completions"
    direct_body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                   "messages": [{"role": "user", "content": f"Tell me a story [[fake:{TAG}]]"}]}

    level.load_before = loadavg()
    cpu0, client0, ticks0 = cpu_by_service(stack), time.process_time(), machine_ticks()
    level.through, wall, level.lag = await open_loop(arrivals, lambda i: timed_stream(
        runs_url.format(threads[i]), {"assistant_id": assistant_id, "stream": True},
        b"event: thread.message.delta", b"event: done", b"event: thread.run.completed"))
    cpu1, level.client_cpu, ticks1 = cpu_by_service(stack), time.process_time() - client0, machine_ticks()
    level.machine_busy = (ticks1[0] - ticks0[0]) / max(ticks1[1] - ticks0[1], 1) * (os.cpu_count() or 1)
    level.memory = [memory_mib(c) for c in stack.containers("assistantd")]
    level.wall = wall
    level.open_through = mean_open(level.through, wall)
    level.cpu_through = {k: cpu1[k] - cpu0[k] for k in cpu0}

    await asyncio.sleep(1)
    cpu0 = cpu_by_service(stack)
    level.direct, wall, _ = await open_loop(arrivals, lambda i: timed_stream(
        direct_url, direct_body, b'"content": "w', b"data: [DONE]", b'"finish_reason": "stop"'))
    cpu1 = cpu_by_service(stack)
    level.open_direct = mean_open(level.direct, wall)
    level.cpu_direct = {k: cpu1[k] - cpu0[k] for k in cpu0}
    level.load_after = loadavg()


def report(level: Level) -> str:
    ms = lambda v: v * 1000  # noqa: E731
    through = [r.ttft for r in level.through if r.ok]
    direct = [r.ttft for r in level.direct if r.ok]
    done = len(through)
    errors = len(level.through) - done
    kinds: dict[str, int] = {}
    for r in level.through:
        if not r.ok:
            kinds[r.error or "?"] = kinds.get(r.error or "?", 0) + 1
    per_run = {k: v / max(done, 1) * 1000 for k, v in level.cpu_through.items()}
    fake_direct = level.cpu_direct["fake-upstream"] / max(len(direct), 1) * 1000
    lines = [
        f"N={level.replicas} K={level.streams}: {level.rate:.1f} arrivals/s, {level.arrivals} streams; "
        f"open on average {level.open_through:.1f} through, {level.open_direct:.1f} direct; "
        f"load {level.load_before} -> {level.load_after}",
        f"  completed {done}/{len(level.through)}, errors {errors} {kinds or ''}"
        f"{'' if len(direct) == len(level.direct) else f'  (direct failures {len(level.direct) - len(direct)})'}"
        f"{f'  (client start lag up to {ms(level.lag):.0f} ms)' if level.lag > 0.05 else ''}",
        f"  first delta  direct p50 {ms(pct(direct, .5)):7.1f} ms  p99 {ms(pct(direct, .99)):7.1f} ms | "
        f"through p50 {ms(pct(through, .5)):7.1f} ms  p99 {ms(pct(through, .99)):7.1f} ms | "
        f"added p50 {ms(pct(through, .5) - pct(direct, .5)):7.1f} ms  p99 {ms(pct(through, .99) - pct(direct, .99)):7.1f} ms",
        f"  CPU per streamed run: assistantd (all replicas) {per_run['assistantd']:.1f} ms, PostgreSQL "
        f"{per_run['postgres']:.1f} ms, front {per_run['front']:.1f} ms, fake model {per_run['fake-upstream']:.1f} ms; "
        f"fake model per direct stream {fake_direct:.1f} ms (assistantd/model {per_run['assistantd'] / fake_direct:.1f}x); "
        f"client {level.client_cpu / max(len(level.through), 1) * 1000:.1f} ms",
        f"  cores busy during the through phase: assistantd {level.cpu_through['assistantd'] / level.wall:.2f}, "
        f"PostgreSQL {level.cpu_through['postgres'] / level.wall:.2f}, front {level.cpu_through['front'] / level.wall:.2f}, "
        f"the whole machine {level.machine_busy:.2f} of {os.cpu_count()}; "
        f"memory per replica {', '.join(f'{m:.0f} MiB' for m in level.memory)}",
    ]
    return "\n".join(lines)


def summary_row(level: Level) -> str:
    ms = lambda v: v * 1000  # noqa: E731
    through = [r.ttft for r in level.through if r.ok]
    direct = [r.ttft for r in level.direct if r.ok]
    done = len(through)
    cpu = level.cpu_through["assistantd"] / max(done, 1) * 1000
    pg = level.cpu_through["postgres"] / max(done, 1) * 1000
    fake_direct = level.cpu_direct["fake-upstream"] / max(len(direct), 1) * 1000
    return (f"{level.replicas:>2} {level.streams:>4} {level.open_through:>6.1f} {done:>5}/{len(level.through):<5} "
            f"{len(level.through) - done:>4} {ms(pct(through, .5) - pct(direct, .5)):>8.1f} "
            f"{ms(pct(through, .99) - pct(direct, .99)):>8.1f} {cpu:>7.1f} {pg:>6.1f} {fake_direct:>6.2f} "
            f"{'/'.join(f'{m:.0f}' for m in level.memory):>10} {level.cpu_through['assistantd'] / level.wall:>5.2f} "
            f"{level.machine_busy:>5.2f}  {level.load_before.split()[0]}->{level.load_after.split()[0]}")


async def bench_stack(stack: Stack, levels: list[int], seconds: float, turn: dict, stream_seconds: float,
                      seed: int) -> list[Level]:
    fake = f"http://127.0.0.1:{stack.fake_port()}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers={"Authorization": "Bearer sk-local"}) as http:
        assistant = (await http.post("/v1/assistants", json={"model": "gpt-4o", "instructions": "Tell stories."})).json()
    # Warm-up: a few seconds at the lowest level, not reported (connections, caches, first imports).
    warm = Level(stack.replicas, levels[0], levels[0] / stream_seconds, 0)
    await run_level(stack, fake, assistant["id"], warm, min(5.0, seconds), turn, seed)
    out = []
    for k in levels:
        level = Level(stack.replicas, k, k / stream_seconds, 0)
        await run_level(stack, fake, assistant["id"], level, seconds, turn, seed + k)
        print(report(level), flush=True)
        out.append(level)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2", help="comma-separated replica counts")
    parser.add_argument("--streams", default="10,25,50,100",
                        help="comma-separated load levels: streams open at once (on average)")
    parser.add_argument("--seconds", type=float, default=20.0, help="arrivals per level last this long")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--first-delay", type=float, default=0.1)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    args = parser.parse_args()

    turn = {"chunks": [f"w{i:02d} " for i in range(args.chunks)], "first_delay": args.first_delay,
            "delay": args.delay}
    stream_seconds = args.first_delay + args.chunks * args.delay  # the model's own time per answer
    levels = [int(k) for k in args.streams.split(",")]
    if not args.no_build:
        build_images()
    print(f"{os.cpu_count()} cores; the model: first chunk after {args.first_delay * 1000:.0f} ms, then "
          f"{args.chunks} chunks {args.delay * 1000:.0f} ms apart ({stream_seconds:.2f} s a stream); "
          f"{args.seconds:.0f} s of Poisson arrivals per level at K / {stream_seconds:.2f} s", flush=True)
    rows = []
    for n in [int(r) for r in args.replicas.split(",")]:
        stack = Stack(Path(tempfile.mkdtemp(prefix="assistantd-compose-bench-")), replicas=n,
                      env={"ASSISTANTD_SANDBOX_WARM_POOL": "0", "ASSISTANTD_LOG_LEVEL": "warning"},
                      fake_no_record=True)
        try:
            started = time.monotonic()
            stack.up()
            print(f"--- {n} replica(s) up and healthy in {time.monotonic() - started:.0f} s; load {loadavg()}", flush=True)
            rows += asyncio.run(bench_stack(stack, levels, args.seconds, turn, stream_seconds, args.seed))
        finally:
            stack.close()
            left = stack.leftovers()
            if any(left.values()):
                print(f"left behind: {left}", file=sys.stderr)
    print("\n N    K   open  completed   err  add p50  add p99  asd ms  pg ms  model  MiB/replica asd/s  busy  load1")
    for level in rows:
        print(summary_row(level))
    print("(add: time to first thread.message.delta through the front minus the first content chunk straight "
          "from the model, ms; asd/pg: CPU ms per streamed run of all replicas / of PostgreSQL; model: the fake "
          "model's CPU ms per direct stream; asd/s: cores the replicas used, busy: cores the whole machine used, "
          "other jobs included, both over the through phase; load1: load average before -> after the level)")


if __name__ == "__main__":
    main()
