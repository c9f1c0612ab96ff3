"""What the open-loop benchmarks share (bench/load.py, bench/compose_load.py): a lean streaming
client, Poisson arrivals, percentiles, and the CPU and memory of local processes (Linux /proc).

The client is a bare asyncio connection, not httpx: it shares the machine's two cores with what it
measures, and httpx's own CPU per chunk would blur the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

STREAM_TIMEOUT = 120.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


@dataclass
class Result:
    start: float
    end: float
    ttft: float | None
    ok: bool
    error: str | None = None


async def timed_stream(url: str, body: dict, first: bytes, last: bytes, ok_marker: bytes,
                       timeout: float = STREAM_TIMEOUT) -> Result:
    """POST ``body``, read the streamed answer, note when ``first`` appears; ``ok`` when the status
    is 200 and ``ok_marker`` was seen before ``last``."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    ttft, seen, status, ok, writer = None, b"", None, False, None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
                         f"Authorization: Bearer sk-local\r\n"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if status is None:
                    status = chunk[9:12]
                seen = seen[-256:] + chunk
                if ttft is None and first in seen:
                    ttft = time.perf_counter() - start
                if ok_marker in seen:
                    ok = True
                if last in seen:
                    break
    except (OSError, TimeoutError) as exc:
        return Result(start, time.perf_counter(), ttft, False, type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
    error = None if ok and status == b"200" else f"status {status!r}" if status != b"200" else "not completed"
    return Result(start, time.perf_counter(), ttft, error is None and ttft is not None, error)


def poisson(rate: float, seconds: float, seed: int) -> list[float]:
    """Arrival times (seconds from the start) of a Poisson process of ``rate`` per second."""
    rng = random.Random(seed)
    arrivals, t = [], rng.expovariate(rate)
    while t < seconds:
        arrivals.append(t)
        t += rng.expovariate(rate)
    return arrivals


async def open_loop(arrivals: list[float], make) -> tuple[list[Result], float, float]:
    """Start ``make(i)`` at each arrival time (seconds from now), whether or not the earlier ones
    are done; return the results, the wall time until the last ended, and the worst start lag."""
    t0 = time.perf_counter()
    tasks, lag = [], 0.0
    for i, at in enumerate(arrivals):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        tasks.append(asyncio.create_task(make(i)))
    results = await asyncio.gather(*tasks)
    return results, time.perf_counter() - t0, lag


def mean_open(results: list[Result], wall: float) -> float:
    """Streams open on average over ``wall`` seconds."""
    return sum(r.end - r.start for r in results) / wall if wall else 0.0


# --- local processes ----------------------------------------------------------------------------

def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """User + system CPU time so far of a process (with ``tree``: and of its descendants)."""
    total = 0.0
    for p in process_tree(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_seconds_precise(pid: int) -> float:
    """CPU time so far of a process's live threads, to the nanosecond (``/proc/PID/task/*/schedstat``;
    ``/proc/PID/stat`` counts in clock ticks, 10 ms). A thread that ends between two readings takes
    its time with it: for short comparisons of a server whose threads stay (bench/ab.py)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def rss_mib(pid: int, tree: bool = False) -> float:
    """Resident memory of a process (with ``tree``: and of its descendants), MiB."""
    total = 0
    for p in process_tree(pid) if tree else [pid]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
