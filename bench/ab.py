"""Benchmark: server CPU per run of two versions of assistantd, side by side (not a test).

Sequential before/after runs of ``bench/stream_overhead.py`` on a 2-core machine differ by more
than the change being measured (other work, frequency, caches). Here both versions' servers run at
once against one fake upstream, and batches of runs alternate between them (A B, B A, …), so both
see the same background; the figure is the ratio per batch, and its median.

    python bench/ab.py OLD_CHECKOUT NEW_CHECKOUT [--mode stream|poll|idle|load] [--batches 16]

Each checkout is a folder with ``src/assistantd`` (e.g. ``git worktree add /tmp/old <rev>``).
``stream``: 40 streamed runs a batch, one at a time; ``poll``: 200 non-streamed runs a batch at
concurrency 10, polled. CPU is read from /proc/PID/task/*/schedstat, to the nanosecond.
``idle``: not CPU but time, bench/load.py's idle figure: 10 streamed runs a batch, one at a time, each
after one straight to the model (first chunk after 100 ms; ``--instant``: at once); the figure is the
added time to the first ``thread.message.delta`` (through minus straight), its median per batch, and
the difference new − old per batch.
``load``: under load, as bench/load.py's open loop (``--streams`` open at once, Poisson arrivals,
the paced model) for ``--seconds`` a batch; the figure is the server's CPU per streamed run over the
model's CPU per stream through it in the same batch (the machine's pace, measured alongside), and the
ratio of that figure new/old per batch. (Sequential runs of bench/load.py on these two cores drift by
more than a change of 10 %.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import stream_overhead as so  # noqa: E402
from openloop import cpu_seconds_precise  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--mode", choices=("stream", "poll", "idle", "load"), default="stream")
    parser.add_argument("--streams", type=int, default=50, help="load: streams open at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="load: seconds of arrivals a batch")
    parser.add_argument("--instant", action="store_true", help="idle: the model answers at once")
    parser.add_argument("--batches", type=int, default=16)
    args = parser.parse_args()

    versions = {"old": args.old.resolve(), "new": args.new.resolve()}
    fake, upstream = so.start_fake()
    servers: dict[str, ServerProcess] = {}
    per: dict[str, list[float]] = {name: [] for name in versions}
    try:
        for name, root in versions.items():
            servers[name] = ServerProcess(
                Path(tempfile.mkdtemp(prefix=f"assistantd-ab-{name}-")), None, ASSISTANTD_UPSTREAM_BASE_URL=upstream,
                ASSISTANTD_LOG_LEVEL="warning", ASSISTANTD_SANDBOX_WARM_POOL="0", PYTHONPATH=str(root / "src")).start()
        if args.mode == "idle":
            return idle(servers, fake.pid, upstream, args.batches, "pace-0-0-20" if args.instant else "pace-100-5-20")
        if args.mode == "load":
            return under_load(servers, fake.pid, upstream, args.batches, args.streams, args.seconds)
        for batch in range(args.batches):
            for name in (list(versions) if batch % 2 == 0 else list(reversed(versions))):
                server = servers[name]
                before = cpu_seconds_precise(server.proc.pid)
                if args.mode == "stream":
                    asyncio.run(so.ttft_phase(server.base_url, upstream, 1, 40))
                    runs = 40
                else:
                    asyncio.run(so.throughput_phase(server.base_url, upstream, 10, 200, server.proc.pid, fake.pid))
                    runs = 200
                per[name].append((cpu_seconds_precise(server.proc.pid) - before) / runs * 1000)
        for name, root in versions.items():
            values = per[name]
            print(f"{name} ({root}): server CPU per {args.mode} run, median {statistics.median(values):.2f} ms "
                  f"(min {min(values):.2f}, max {max(values):.2f})")
        ratios = [new / old for old, new in zip(per["old"], per["new"]) if old]
        print(f"new/old per batch: median {statistics.median(ratios):.3f} "
              f"(from {min(ratios):.2f} to {max(ratios):.2f}, {len(ratios)} batches)")
    finally:
        for server in servers.values():
            server.stop()
        fake.terminate()


def idle(servers: dict[str, ServerProcess], fake_pid: int, upstream: str, batches: int, tag: str) -> None:
    """``--mode idle``: the added time to the first delta of each version, batches alternated."""
    import load

    per: dict[str, list[float]] = {name: [] for name in servers}

    async def run() -> None:
        benches = {name: load.Bench(server, fake_pid, upstream) for name, server in servers.items()}
        threads = {}
        for name, bench in benches.items():
            await bench.setup()
            threads[name] = await bench.threads(10 * batches + 3, tag)
            for t in threads[name][-3:]:  # warm both paths
                await bench.through(t)
                await bench.direct(tag)
        for batch in range(batches):
            for name in (list(servers) if batch % 2 == 0 else list(reversed(servers))):
                bench, added = benches[name], []
                for t in threads[name][batch * 10:(batch + 1) * 10]:
                    direct = await bench.direct(tag)
                    through = await bench.through(t)
                    if not (direct.ok and through.ok):
                        raise RuntimeError(f"{name}: a stream failed ({direct.error or through.error})")
                    added.append((through.ttft - direct.ttft) * 1000)
                per[name].append(statistics.median(added))

    asyncio.run(run())
    for name, values in per.items():
        print(f"{name}: added time to the first delta ({tag}), median of batch medians "
              f"{statistics.median(values):.2f} ms (min {min(values):.2f}, max {max(values):.2f})")
    differences = [new - old for old, new in zip(per["old"], per["new"])]
    print(f"new - old per batch: median {statistics.median(differences):+.2f} ms "
          f"(from {min(differences):+.2f} to {max(differences):+.2f}, {len(differences)} batches)")


def under_load(servers: dict[str, ServerProcess], fake_pid: int, upstream: str, batches: int, streams: int,
               seconds: float) -> None:
    """``--mode load``: open-loop batches alternated between the versions."""
    import load
    from openloop import open_loop, poisson

    per: dict[str, list[float]] = {name: [] for name in servers}
    raw: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    rate = streams / load.STREAM_SECONDS

    async def run() -> None:
        benches = {name: load.Bench(server, fake_pid, upstream) for name, server in servers.items()}
        for bench in benches.values():
            await bench.setup()
            await bench.open(10, 3, 1)  # warm-up
        for batch in range(batches):
            arrivals = poisson(rate, seconds, 100 + batch)
            for name in (list(servers) if batch % 2 == 0 else list(reversed(servers))):
                bench, pid = benches[name], servers[name].proc.pid
                threads = await bench.threads(len(arrivals), load.PACE)
                await asyncio.sleep(1)
                cpu0, model0 = cpu_seconds_precise(pid), cpu_seconds_precise(fake_pid)
                results, _, _ = await open_loop(arrivals, lambda i: bench.through(threads[i]))
                server_ms = (cpu_seconds_precise(pid) - cpu0) / len(results) * 1000
                model_ms = (cpu_seconds_precise(fake_pid) - model0) / len(results) * 1000
                if not all(r.ok for r in results):
                    raise RuntimeError(f"{name}: a stream failed")
                raw[name].append((server_ms, model_ms))
                per[name].append(server_ms / model_ms)
            await asyncio.sleep(1)

    asyncio.run(run())
    for name in servers:
        print(f"{name}: N={streams}, CPU per streamed run {statistics.median(s for s, _ in raw[name]):.2f} ms, "
              f"the model's through it {statistics.median(m for _, m in raw[name]):.2f} ms; "
              f"per batch ours/model's median {statistics.median(per[name]):.2f}x "
              f"(min {min(per[name]):.2f}, max {max(per[name]):.2f})")
    ratios = [new / old for old, new in zip(per["old"], per["new"])]
    print(f"new/old per batch (each against the model's CPU in its batch): median {statistics.median(ratios):.3f} "
          f"(from {min(ratios):.2f} to {max(ratios):.2f}, {len(ratios)} batches)")


if __name__ == "__main__":
    main()
