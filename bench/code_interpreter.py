"""Benchmark: the time a ``print(1)`` code_interpreter call adds to a run (not a test).

Starts the scripted fake upstream and an assistantd server (SQLite, temp folder). Each sample
is one streamed run whose model turn calls ``code_interpreter`` with ``print(1)``; the time
added by the tool is measured on the client's stream, from the step delta carrying the last
piece of code to the step delta carrying the outputs. Two cases:

- warm: the thread already has its sandbox (a persistent kernel; nothing starts per call);
- cold: a new thread each time with the warm pool off, so a container is started for the call.

The baseline printed beside them is the same ``print(1)`` as a process per call in the same
image: ``docker run --rm <image> python3 -c 'print(1)'``.

    python bench/code_interpreter.py [--samples 30] [--cold-samples 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from stream_overhead import pct, start_fake  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def script(upstream_root: str, tag: str, n: int) -> None:
    turns = []
    for _ in range(n):
        turns += [{"tool_calls": [{"name": "code_interpreter", "arguments": {"code": "print(1)"}}]},
                  {"text": "done"}]
    httpx.post(f"{upstream_root}/__fake/script", json={"tag": tag, "turns": turns}).raise_for_status()


def tool_time(http: httpx.Client, thread_id: str, assistant_id: str) -> float:
    """Seconds between the last code delta and the outputs delta of one streamed run."""
    last_input = outputs_at = None
    with http.stream("POST", f"/threads/{thread_id}/runs", json={"assistant_id": assistant_id, "stream": True}) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "thread.run.step.delta":
                calls = json.loads(line[6:])["delta"]["step_details"].get("tool_calls") or []
                for call in calls:
                    ci = call.get("code_interpreter") or {}
                    if ci.get("outputs"):
                        outputs_at = time.perf_counter()
                    elif ci.get("input"):
                        last_input = time.perf_counter()
    if last_input is None or outputs_at is None:
        raise RuntimeError("the run did not stream code and outputs")
    return outputs_at - last_input


def measure(server: ServerProcess, upstream_root: str, samples: int, same_thread: bool) -> list[float]:
    tag = f"bench{time.time_ns()}"
    script(upstream_root, tag, samples + 1)
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        assistant = http.post("/assistants", json={"model": "gpt-4o", "tools": [{"type": "code_interpreter"}]}).json()

        def new_thread() -> str:
            return http.post("/threads", json={"messages": [{"role": "user", "content": f"go [[fake:{tag}]]"}]}).json()["id"]

        thread = new_thread()
        tool_time(http, thread, assistant["id"])  # the thread's first call (warms its sandbox)
        times = []
        for _ in range(samples):
            times.append(tool_time(http, thread if same_thread else new_thread(), assistant["id"]))
    return times


def baseline(image: str, samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c", "print(1)"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--cold-samples", type=int, default=10)
    args = parser.parse_args()
    image = os.environ.get("ASSISTANTD_SANDBOX_IMAGE", "assistantd-sandbox:latest")
    fake, upstream = start_fake()
    root = upstream.rsplit("/v1", 1)[0]
    ms = lambda v: v * 1000  # noqa: E731
    try:
        for label, warm_pool, same_thread, n in (("warm (persistent kernel)", "1", True, args.samples),
                                                 ("cold (container started for the call)", "0", False, args.cold_samples)):
            server = ServerProcess(Path(tempfile.mkdtemp(prefix="assistantd-bench-ci-")), None,
                                   ASSISTANTD_UPSTREAM_BASE_URL=upstream, ASSISTANTD_LOG_LEVEL="warning",
                                   ASSISTANTD_SANDBOX_WARM_POOL=warm_pool)
            try:
                server.start()
                times = measure(server, root, n, same_thread)
            finally:
                server.stop()
            print(f"{label}: p50 {ms(pct(times, .5)):8.1f} ms   p95 {ms(pct(times, .95)):8.1f} ms   ({n} calls)")
        base = baseline(image, max(5, args.cold_samples))
        print(f"baseline, docker run per call: p50 {ms(pct(base, .5)):8.1f} ms   p95 {ms(pct(base, .95)):8.1f} ms")
    finally:
        fake.terminate()


if __name__ == "__main__":
    main()
