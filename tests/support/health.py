"""``/healthz`` polled while a test attacks the server: the hardening tests assert that the event
loop keeps answering."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable

POLLER = """
import sys, time, httpx
worst = 0.0
with httpx.Client(base_url=sys.argv[1], timeout=30) as client:
    print("ready", flush=True)
    while not sys.stdin.readline().startswith("stop"):
        start = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        worst = max(worst, time.perf_counter() - start)
        print("polled", flush=True)
print(worst, flush=True)
"""


class HealthPoller:
    """Polls ``/healthz`` from another process (so nothing in the test's own process delays
    it) every 5 ms, and keeps the slowest answer (``worst``, seconds) and the number of polls.
    ``on_poll`` is called after each poll (to sample something else meanwhile)."""

    def __init__(self, url: str, on_poll: Callable[[], None] | None = None) -> None:
        self.url, self.on_poll, self.worst, self.polls = url, on_poll, None, 0

    def __enter__(self) -> "HealthPoller":
        self.proc = subprocess.Popen([sys.executable, "-c", POLLER, self.url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()
        time.sleep(0.2)
        return self

    def _drive(self) -> None:
        while not self.stop.is_set():
            self.proc.stdin.write("poll\n")
            self.proc.stdin.flush()
            self.proc.stdout.readline()
            self.polls += 1
            if self.on_poll is not None:
                self.on_poll()
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        time.sleep(0.1)
        self.stop.set()
        self.thread.join()
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.worst = float(self.proc.stdout.readline())
        self.proc.wait()
