"""Benchmark: assistantd under real load (issue 14) — not a test, not in CI.

Starts the scripted fake upstream and an assistantd server (SQLite in a temp folder, one process),
then, each figure beside the same one measured straight against the upstream in the same run:

1. **Idle**: streams one at a time, the model answering its first chunk after 100 ms, and again
   answering at once: time to the first ``thread.message.delta`` through assistantd minus the
   time to the first content chunk straight from the model (p50, p99).
2. **Open loop**: Poisson arrivals of streamed runs (``POST /v1/threads/{id}/runs`` with
   ``stream: true``, threads made beforehand) at the rate that keeps N streams open at once, for
   each N of ``--streams``; the model answers at a realistic pace (first chunk after 100 ms, then
   20 chunks 50 ms apart: 100 characters, 21 chunks with the role's). The same arrival schedule
   then goes straight to the model. Printed: added time to the first delta (p50, p99), errors,
   the CPU seconds per streamed run of assistantd and of the model per direct stream, their ratio.
3. **Non-streamed runs/s** (create, then poll until completed; bench/stream_overhead.py's phase)
   and the SDK's ``create_and_poll`` wall time with the server's ``openai-poll-after-ms`` and
   without it.
4. With ``--database-url postgresql://…``: the N=50 open-loop level on PostgreSQL for each count
   of ``--workers`` (``assistantd serve --workers K``).
5. With ``--hold 1000``: that many streams open at once for ``--hold-seconds`` against a slow model
   (a chunk every 3 s): errors and the server's largest resident memory.

    python bench/load.py [--streams 1,20,50,100] [--seconds 20] [--database-url postgresql://…]
                         [--workers 1,2] [--hold 1000] [--skip idle,open,runs,poll] [--server-src DIR]
                         [--py-spy PREFIX] [--chunks 20] [--rounds 3]

``--rounds K`` alternates each open-loop level's two halves (through assistantd, then straight to
the model) K times and gives the figures over all of them, with each round's CPU ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.openloop import (Result, cpu_seconds, loadavg, mean_open, open_loop, pct, poisson,  # noqa: E402
                            rss_mib, timed_stream)
from bench.stream_overhead import poll_phase, start_fake, throughput_phase  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

CHUNKS = 20  # the model's text: 20 pieces of "word " (100 characters), after its role chunk
PACE = f"pace-100-50-{CHUNKS}"  # first chunk after 100 ms, then one every 50 ms
STREAM_SECONDS = 0.1 + CHUNKS * 0.05  # the model's own time per answer
FIRST_DELTA, DONE, COMPLETED = b"event: thread.message.delta", b"event: done", b"event: thread.run.completed"
DIRECT_FIRST, DIRECT_DONE, DIRECT_OK = b'"content": "word', b"data: [DONE]", b'"finish_reason": "stop"'


def set_chunks(chunks: int) -> None:
    """``--chunks``: the model's answer in that many pieces instead (two runs at different counts
    split the CPU per run into what each chunk costs and what the run costs whatever its length)."""
    global CHUNKS, PACE, STREAM_SECONDS
    CHUNKS, PACE, STREAM_SECONDS = chunks, f"pace-100-50-{chunks}", 0.1 + chunks * 0.05


@dataclass
class Phase:
    name: str
    server: str = "assistantd"  # what the through figures went through
    through: list[Result] = field(default_factory=list)
    direct: list[Result] = field(default_factory=list)
    wall: float = 0.0
    open_through: float = 0.0
    lag: float = 0.0
    server_cpu: float = 0.0  # seconds, the through part
    model_cpu_through: float = 0.0  # the model's, the through part
    model_cpu_direct: float = 0.0  # the model's, the direct part
    rss: float = 0.0
    load: str = ""
    round_ratios: list[float] = field(default_factory=list)  # CPU ratio of each round (open loop)

    def ms(self, results: list[Result], p: float) -> float:
        return pct([r.ttft for r in results if r.ok], p) * 1000

    def report(self) -> str:
        done = sum(r.ok for r in self.through)
        direct_done = sum(r.ok for r in self.direct)
        errors = len(self.through) - done
        kinds: dict[str, int] = {}
        for r in self.through:
            if not r.ok:
                kinds[r.error or "?"] = kinds.get(r.error or "?", 0) + 1
        lines = [f"{self.name}: {len(self.through)} streams, open on average {self.open_through:.1f}; "
                 f"errors {errors} {kinds or ''}"
                 f"{f'  (direct failures {len(self.direct) - direct_done})' if direct_done < len(self.direct) else ''}"
                 f"{f'  (client start lag up to {self.lag * 1000:.0f} ms)' if self.lag > 0.05 else ''}; load {self.load}",
                 f"  first delta  direct p50 {self.ms(self.direct, .5):7.1f} ms  p99 {self.ms(self.direct, .99):7.1f} ms"
                 f" | through p50 {self.ms(self.through, .5):7.1f} ms  p99 {self.ms(self.through, .99):7.1f} ms"
                 f" | added p50 {self.ms(self.through, .5) - self.ms(self.direct, .5):6.1f} ms"
                 f"  p99 {self.ms(self.through, .99) - self.ms(self.direct, .99):6.1f} ms"]
        if not self.direct:
            lines.append(f"  server CPU {self.server_cpu:.1f} s over {self.wall:.0f} s; server RSS at most {self.rss:.0f} MiB")
        elif self.server_cpu and direct_done:
            per_run = self.server_cpu / max(done, 1) * 1000
            model = self.model_cpu_direct / direct_done * 1000
            lines.append(f"  CPU per streamed run: {self.server} {per_run:.2f} ms, the model per direct stream "
                         f"{model:.2f} ms (ratio {per_run / model:.2f}x); the model per stream through {self.server} "
                         f"{self.model_cpu_through / max(done, 1) * 1000:.2f} ms; server RSS {self.rss:.0f} MiB")
            if len(self.round_ratios) > 1:
                lines.append("  CPU ratio of each round: " + ", ".join(f"{r:.2f}x" for r in self.round_ratios))
        return "\n".join(lines)


class Bench:
    label = "assistantd"  # what the reports call the server

    def __init__(self, server: ServerProcess, fake_pid: int, upstream: str) -> None:
        self.server, self.fake_pid, self.upstream = server, fake_pid, upstream
        self.assistant_id = ""

    async def setup(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=60) as http:
            self.assistant_id = (await http.post("/assistants", json={"model": "gpt-4o",
                                                                      "instructions": "Answer."})).json()["id"]

    async def threads(self, n: int, tag: str) -> list[str]:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=60, limits=limits) as http:
            async def one() -> str:
                r = await http.post("/threads", json={"messages": [{"role": "user", "content": f"Hi [[fake:{tag}]]"}]})
                r.raise_for_status()
                return r.json()["id"]
            out: list[str] = []
            for i in range(0, n, 8):
                out += await asyncio.gather(*(one() for _ in range(min(8, n - i))))
            return out

    def through(self, thread_id: str, timeout: float = 120.0):
        return timed_stream(f"{self.server.base_url}/threads/{thread_id}/runs",
                            {"assistant_id": self.assistant_id, "stream": True}, FIRST_DELTA, DONE, COMPLETED,
                            timeout=timeout)

    def direct(self, tag: str, timeout: float = 120.0):
        body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "system", "content": "Answer."},
                             {"role": "user", "content": f"Hi [[fake:{tag}]]"}]}
        return timed_stream(f"{self.upstream}/chat/completions", body, DIRECT_FIRST, DIRECT_DONE, DIRECT_OK,
                            timeout=timeout)

    async def idle(self, tag: str, n: int) -> Phase:
        """One stream at a time, direct and through alternated."""
        phase = Phase(f"idle, model {tag}", self.label)
        threads = await self.threads(n + 3, tag)
        for t in threads[:3]:  # warm both paths
            await self.through(t)
            await self.direct(tag)
        for t in threads[3:]:
            phase.direct.append(await self.direct(tag))
            phase.through.append(await self.through(t))
        phase.load = loadavg()
        return phase

    async def open(self, streams: int, seconds: float, seed: int, label: str = "", rounds: int = 1) -> Phase:
        """``rounds`` times: the arrivals through the server, then the same schedule straight to the
        model (each round its own schedule). The figures are over all rounds; the CPU ratio of each
        round is printed too (the model's CPU per stream drifts by ±20 % between runs minutes apart
        on these two cores, so one pair of phases can land on either side of a target)."""
        rate = streams / STREAM_SECONDS
        phase = Phase(f"open loop{label}, N={streams} ({rate:.1f} arrivals/s)"
                      f"{f', {rounds} rounds' if rounds > 1 else ''}", self.label)
        pid = self.server.proc.pid
        for r in range(rounds):
            arrivals = poisson(rate, max(seconds, 40 / rate), seed + 1000 * r)
            threads = await self.threads(len(arrivals), PACE)
            await asyncio.sleep(1)  # let the thread writes settle
            profiler = start_profiler(pid, f"{label.strip(' ()')}-n{streams}{f'-r{r}' if rounds > 1 else ''}")
            cpu0, model0 = cpu_seconds(pid, tree=True), cpu_seconds(self.fake_pid)
            through, wall, lag = await open_loop(arrivals, lambda i: self.through(threads[i]))
            server_cpu = cpu_seconds(pid, tree=True) - cpu0
            stop_profiler(profiler)
            phase.model_cpu_through += cpu_seconds(self.fake_pid) - model0
            phase.rss = max(phase.rss, rss_mib(pid, tree=True))
            await asyncio.sleep(1)
            model0 = cpu_seconds(self.fake_pid)
            direct, _, _ = await open_loop(arrivals, lambda i: self.direct(PACE))
            model_cpu = cpu_seconds(self.fake_pid) - model0
            phase.through += through
            phase.direct += direct
            phase.wall += wall
            phase.lag = max(phase.lag, lag)
            phase.server_cpu += server_cpu
            phase.model_cpu_direct += model_cpu
            done, direct_done = sum(x.ok for x in through), sum(x.ok for x in direct)
            if done and direct_done and model_cpu:
                phase.round_ratios.append((server_cpu / done) / (model_cpu / direct_done))
        phase.open_through = mean_open(phase.through, phase.wall)
        phase.load = loadavg()
        return phase

    async def hold(self, streams: int, seconds: float, ramp: float) -> Phase:
        """``streams`` streams opened over ``ramp`` seconds against a model that takes
        ``seconds`` to answer; the server's memory sampled every second."""
        delay_ms = int(seconds * 1000 / CHUNKS)
        tag = f"pace-100-{delay_ms}-{CHUNKS}"
        phase = Phase(f"{streams} streams held ~{seconds:.0f} s (a chunk every {delay_ms / 1000:g} s)", self.label)
        threads = await self.threads(streams, tag)
        pid, peak, stop = self.server.proc.pid, [0.0], threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                peak[0] = max(peak[0], rss_mib(pid, tree=True))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        arrivals = [ramp * i / streams for i in range(streams)]
        cpu0 = cpu_seconds(pid, tree=True)
        timeout = seconds + ramp + 120
        phase.through, phase.wall, phase.lag = await open_loop(arrivals, lambda i: self.through(threads[i], timeout))
        stop.set()
        sampler.join()
        phase.server_cpu = cpu_seconds(pid, tree=True) - cpu0
        phase.rss = peak[0]
        phase.open_through = mean_open(phase.through, phase.wall)
        phase.load = loadavg()
        return phase


SERVER_SRC: str | None = None  # --server-src: the server's code from another checkout's src/
PROFILE: str | None = None  # --py-spy PREFIX: profile the server through each open-loop level


def start_profiler(pid: int, name: str) -> subprocess.Popen | None:
    """py-spy sampling the server (200 Hz, raw collapsed stacks) while the through part runs:
    ``PREFIX-<level>.txt``. (Its samples cost the server a little CPU: a profiled run's figures are
    for the profile, not for the table.) ``PYSPY_NATIVE=1`` in the environment: with C frames too."""
    if PROFILE is None:
        return None
    out = f"{PROFILE}-{name.replace(' ', '').replace(',', '-')}.txt"
    native = ["--native"] if os.environ.get("PYSPY_NATIVE") else []  # C frames too (the loop's, the system calls)
    return subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record", *native,
                             "-p", str(pid), "-r", "200", "-f", "raw", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


def start_server(database_url: str | None, upstream: str, workers: int = 1, **env: str) -> ServerProcess:
    if SERVER_SRC:
        env["PYTHONPATH"] = SERVER_SRC
    server = ServerProcess(Path(tempfile.mkdtemp(prefix="assistantd-load-")), database_url,
                           serve_args=("--workers", str(workers)) if workers > 1 else (),
                           ASSISTANTD_UPSTREAM_BASE_URL=upstream, ASSISTANTD_LOG_LEVEL="warning",
                           ASSISTANTD_SANDBOX_WARM_POOL="0", ASSISTANTD_EMBEDDINGS="none", **env)
    return server.start(timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,20,50,100", help="open-loop levels: streams open at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="arrivals per open-loop level last this long")
    parser.add_argument("--idle-runs", type=int, default=60)
    parser.add_argument("--runs", type=int, default=1000, help="non-streamed runs for the runs/s figure")
    parser.add_argument("--poll-runs", type=int, default=10)
    parser.add_argument("--database-url", default=None, help="PostgreSQL: also the --workers figures")
    parser.add_argument("--workers", default="1,2", help="process counts for the PostgreSQL figure")
    parser.add_argument("--hold", type=int, default=0, help="streams to hold open at once (0: skip)")
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    parser.add_argument("--skip", default="", help="comma-separated: idle, open, runs, poll")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=1,
                        help="open-loop levels: alternate through and direct this many times (figures over all)")
    parser.add_argument("--chunks", type=int, default=CHUNKS, help="pieces of the model's answer (20: 100 characters)")
    parser.add_argument("--py-spy", default=None, metavar="PREFIX",
                        help="profile the server with py-spy through each open-loop level (PREFIX-<level>.txt)")
    parser.add_argument("--server-src", default=None,
                        help="run the server from this src/ folder (another checkout: a before/after figure)")
    args = parser.parse_args()
    global SERVER_SRC, PROFILE
    SERVER_SRC, PROFILE = args.server_src, args.py_spy
    set_chunks(args.chunks)
    skip = set(filter(None, args.skip.split(",")))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # held streams: two sockets each, per side
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    fake, upstream = start_fake()
    print(f"model: first chunk after 100 ms, then {CHUNKS} chunks 50 ms apart ({STREAM_SECONDS:.2f} s an answer); "
          f"load {loadavg()}", flush=True)
    try:
        server = start_server(None, upstream)
        try:
            bench = Bench(server, fake.pid, upstream)
            asyncio.run(bench.setup())
            if "idle" not in skip:
                for tag in (f"pace-100-5-{CHUNKS}", f"pace-0-0-{CHUNKS}"):
                    print(asyncio.run(bench.idle(tag, args.idle_runs)).report(), flush=True)
            if "open" not in skip:
                asyncio.run(bench.open(10, 5, args.seed))  # warm-up, not reported
                for n in [int(v) for v in args.streams.split(",")]:
                    print(asyncio.run(bench.open(n, args.seconds, args.seed + n, " (SQLite)", args.rounds)).report(), flush=True)
            if "runs" not in skip:
                t = asyncio.run(throughput_phase(server.base_url, upstream, 50, args.runs, server.proc.pid, fake.pid))
                print(f"non-streamed runs, {args.runs} at concurrency 50 (SQLite): {t['runs_per_s']:.1f} runs/s, "
                      f"upstream direct {t['direct_per_s']:.1f} completions/s (ratio {t['runs_per_s'] / t['direct_per_s']:.2f}); "
                      f"CPU per run {t['server_ms']:.2f} ms vs the model's {t['direct_fake_ms']:.2f} ms per "
                      f"completion ({t['server_ms'] / t['direct_fake_ms']:.1f}x)", flush=True)
            if "poll" not in skip:
                silent = start_server(None, upstream, ASSISTANTD_POLL_AFTER_MS="0")
                try:
                    hinted, unhinted = poll_phase(server.base_url, args.poll_runs), poll_phase(silent.base_url, args.poll_runs)
                finally:
                    silent.stop()
                print(f"SDK create_and_poll, short run, {args.poll_runs} runs: p50 {pct(hinted, .5) * 1000:.0f} ms with "
                      f"openai-poll-after-ms, {pct(unhinted, .5) * 1000:.0f} ms without it (the SDK's 1 s)", flush=True)
            if args.hold:
                held = start_server(None, upstream)  # (the default ASSISTANTD_MAX_CONCURRENT_RUNS)
                try:
                    bench_held = Bench(held, fake.pid, upstream)
                    asyncio.run(bench_held.setup())
                    print(asyncio.run(bench_held.hold(args.hold, args.hold_seconds, ramp=10.0)).report(), flush=True)
                finally:
                    held.stop()
        finally:
            server.stop()
        if args.database_url:
            for workers in [int(v) for v in args.workers.split(",")]:
                pg = start_server(args.database_url, upstream, workers)
                try:
                    bench = Bench(pg, fake.pid, upstream)
                    asyncio.run(bench.setup())
                    asyncio.run(bench.open(10, 5, args.seed))  # warm-up
                    print(asyncio.run(bench.open(50, args.seconds, args.seed + 50,
                                                 f" (PostgreSQL, {workers} process{'es' if workers > 1 else ''})",
                                                 args.rounds)).report(),
                          flush=True)
                finally:
                    pg.stop()
    finally:
        fake.terminate()


if __name__ == "__main__":
    main()
