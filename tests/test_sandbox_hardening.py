"""Step 5 hardening of the code interpreter, against the real Docker engine: code cannot grow the
server's memory through its output or its files, cannot keep processes running after its cell,
cannot poison a thread (file names, lone surrogates), and sandboxes are bounded per server and
per tenant. ``/healthz`` keeps answering fast meanwhile.

Nothing here sends traffic to any address outside 127.0.0.0/8.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_client
from tests.support.health import HealthPoller
from tests.support.fake import marker
from tests.support.runs import POLL_MS, TERMINAL, assistant, wait_for
from tests.support.sandbox import (CODE_INTERPRETER, bot, client, code_call, completed,  # noqa: F401
                                   containers_of, docker_client, instance_of)

MAX_FILES = 3
MAX_FILE_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def docker():
    return docker_client()


@pytest.fixture(scope="module")
def box(docker, spawn):
    server = spawn("sandbox-hardening", ASSISTANTD_SANDBOX_EXEC_TIMEOUT="10",
                   ASSISTANTD_SANDBOX_MAX_OUTPUT_FILES=str(MAX_FILES),
                   ASSISTANTD_SANDBOX_MAX_OUTPUT_FILE_BYTES=str(MAX_FILE_BYTES),
                   ASSISTANTD_SANDBOX_MAX_TOTAL="64", ASSISTANTD_SANDBOX_MAX_PER_TENANT="64")
    yield server
    server.stop()
    assert containers_of(docker, instance_of(server)) == []




def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# --- output --------------------------------------------------------------------------------------

def test_flooding_fd1_keeps_the_server_small_and_healthy(box, client, fake_upstream, bot):
    thread_id = client.beta.threads.create().id
    completed(client, fake_upstream, bot, thread_id, "print('warm')")  # the sandbox is started
    before = _rss_mib(box.proc.pid)
    # 300 MiB straight to fd 1 without a newline (used to be buffered whole by the server), then
    # a child process's output and a last line: both captured, the flood cut to head and tail.
    code = ("import os, subprocess\n"
            "chunk = b'x' * 2**20\n"
            "for _ in range(300):\n"
            "    os.write(1, chunk)\n"
            "subprocess.run(['sh', '-c', 'echo from-child'])\n"
            "print('the end')")
    rss: list[float] = []
    with HealthPoller(box.url, on_poll=lambda: rss.append(_rss_mib(box.proc.pid))) as poller:
        result = completed(client, fake_upstream, bot, thread_id, code)
    logs = result["logs"]
    assert "bytes of output dropped" in logs, logs[-300:]
    assert logs.rstrip().endswith("the end"), logs[-300:]
    assert "from-child" in logs
    assert len(logs) < 128 * 1024
    grown = max(rss + [_rss_mib(box.proc.pid)]) - before
    assert grown < 100, f"server RSS grew {grown:.0f} MiB (from {before:.0f} MiB)"
    print(f"healthz: {poller.polls} requests, max {poller.worst * 1000:.1f} ms")
    assert poller.polls and poller.worst <= 0.1, f"healthz max {poller.worst * 1000:.0f} ms"


def test_output_files_are_bounded(box, client, fake_upstream, bot):
    thread_id = client.beta.threads.create().id
    many = "\n".join(f"open('f{i}.txt', 'w').write('{i}')" for i in range(MAX_FILES + 2))
    result = completed(client, fake_upstream, bot, thread_id, many)
    assert f"more than {MAX_FILES} files were written" in result["logs"]
    assert result["tool_message"].split("[files written: ")[1].count("/mnt/data/f") == MAX_FILES
    # Two files that pass the byte bound together: the first is returned, the second is not.
    big = f"open('a.bin', 'wb').write(b'a' * {MAX_FILE_BYTES * 3 // 4})\n" \
          f"open('b.bin', 'wb').write(b'b' * {MAX_FILE_BYTES * 3 // 4})"
    before = _rss_mib(box.proc.pid)
    result = completed(client, fake_upstream, bot, thread_id, big)
    assert f"/mnt/data/b.bin not returned: the files written pass {MAX_FILE_BYTES} bytes together" \
        in result["logs"]
    assert result["tool_message"].endswith("[files written: /mnt/data/a.bin]"), result["tool_message"]
    assert _rss_mib(box.proc.pid) - before < 100


# --- processes -----------------------------------------------------------------------------------

PROCESSES = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"


def test_leftover_processes_are_killed_and_zombies_reaped(box, client, fake_upstream, bot):
    thread_id = client.beta.threads.create().id
    spawn = ("import subprocess, sys\n"
             "subprocess.Popen(['sleep', '1000'])\n"
             "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
             "print('started')")
    assert completed(client, fake_upstream, bot, thread_id, spawn)["logs"] == "started"
    assert completed(client, fake_upstream, bot, thread_id, PROCESSES)["logs"] == "[1]"
    # Children that exit unwaited (zombies of PID 1 unless reaped), many of them.
    zombies = "import os\nfor _ in range(40):\n    if os.fork() == 0:\n        os._exit(0)\nprint('forked')"
    assert completed(client, fake_upstream, bot, thread_id, zombies)["logs"] == "forked"
    assert completed(client, fake_upstream, bot, thread_id, PROCESSES)["logs"] == "[1]"
    # And the sandbox can still start processes.
    echo = "import subprocess\nprint(subprocess.run(['echo', 'alive'], capture_output=True, text=True).stdout.strip())"
    assert completed(client, fake_upstream, bot, thread_id, echo)["logs"] == "alive"


def test_dev_shm_is_tiny(box, client, fake_upstream, bot):
    code = ("try:\n"
            "    open('/dev/shm/fill', 'wb').write(b'x' * 2 * 2**20)\n"
            "    print('wrote')\n"
            "except OSError as e:\n"
            "    print('refused', e.errno)")
    logs = completed(client, fake_upstream, bot, client.beta.threads.create().id, code)["logs"]
    assert logs.startswith("refused"), logs


# --- poisoned threads ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [".", ".."])
def test_a_file_named_dot_does_not_poison_the_thread(box, client, fake_upstream, bot, name):
    upload = client.files.create(file=(name, b"1,2\n"), purpose="assistants")
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="Here.",
                                        attachments=[{"file_id": upload.id, "tools": [CODE_INTERPRETER]}])
    listing = "import os\nprint(sorted(os.listdir('/mnt/data')))"
    for _ in range(2):  # and the thread's next run is fine too
        logs = completed(client, fake_upstream, bot, thread.id, listing)["logs"]
        assert logs == str([upload.id]), logs


def test_text_from_code_that_cannot_be_encoded_is_repaired(box, client, fake_upstream, bot):
    thread_id = client.beta.threads.create().id
    code = ("print('a\\udcffb')\n"
            "open(b'/mnt/data/bad\\xff.txt', 'wb').write(b'1')\n"
            "raise ValueError('c\\ud800d')")
    result = completed(client, fake_upstream, bot, thread_id, code)
    # (the printed surrogate's three bytes each become U+FFFD; the error's one surrogate, one)
    assert re.search("a\ufffd+b", result["logs"]) and "c\ufffdd" in result["logs"], result["logs"]
    assert "\ufffd" in result["tool_message"]
    # Every read of the thread and its run still answers.
    with httpx.Client(base_url=box.base_url, timeout=30) as http:
        run_id = result["run"].id
        for path in (f"/threads/{thread_id}/messages", f"/threads/{thread_id}/runs",
                     f"/threads/{thread_id}/runs/{run_id}", f"/threads/{thread_id}/runs/{run_id}/steps",
                     "/files"):
            assert http.get(path).status_code == 200, path
        names = [f["filename"] for f in http.get("/files").json()["data"]]
    assert "bad\ufffd.txt" in names, names


# --- the sandboxes' lifetime and number ----------------------------------------------------------

def test_deleting_a_thread_removes_its_sandbox(docker, box, client, fake_upstream, bot):
    instance = instance_of(box)
    thread_id = client.beta.threads.create().id
    completed(client, fake_upstream, bot, thread_id, "print(1)")
    before = len(containers_of(docker, instance))
    client.beta.threads.delete(thread_id)
    assert len(containers_of(docker, instance)) == before - 1


@pytest.fixture(scope="module")
def bounded(docker, spawn):
    """At most 3 sandboxes per server and 2 per tenant, a 1 s wait for a free one."""
    server = spawn("sandbox-bounds", ASSISTANTD_API_KEYS="sk-a,sk-b", ASSISTANTD_SANDBOX_MAX_TOTAL="3",
                   ASSISTANTD_SANDBOX_MAX_PER_TENANT="2", ASSISTANTD_SANDBOX_WAIT_SECONDS="1",
                   ASSISTANTD_SANDBOX_WARM_POOL="0")
    yield server
    server.stop()


def test_sandboxes_are_bounded_per_server_and_per_tenant(docker, bounded, fake_upstream):
    instance = instance_of(bounded)
    with make_client(bounded.base_url, "sk-a", timeout=60) as a, make_client(bounded.base_url, "sk-b", timeout=60) as b:
        bot_a, bot_b = assistant(a, tools=[CODE_INTERPRETER]), assistant(b, tools=[CODE_INTERPRETER])
        first, second, third = (a.beta.threads.create().id for _ in range(3))
        completed(a, fake_upstream, bot_a, first, "x = 'first'")
        completed(a, fake_upstream, bot_a, second, "x = 'second'")
        assert len(containers_of(docker, instance)) == 2
        # The tenant's third thread takes the place of its least recently used idle sandbox.
        completed(a, fake_upstream, bot_a, third, "print(1)")
        assert len(containers_of(docker, instance)) == 2
        assert completed(a, fake_upstream, bot_a, second, "print(x)")["logs"] == "second"
        # Another tenant: a third sandbox fits the server, a fourth evicts the oldest idle one.
        completed(b, fake_upstream, bot_b, b.beta.threads.create().id, "print(1)")
        assert len(containers_of(docker, instance)) == 3
        completed(b, fake_upstream, bot_b, b.beta.threads.create().id, "print(1)")
        assert len(containers_of(docker, instance)) == 3

        # Both of tenant a's sandboxes busy: its next thread waits 1 s, then its run fails.
        busy = []
        for thread_id in (second, third):
            tag = fake_upstream.script(*code_call("import time\ntime.sleep(12)"))
            a.beta.threads.messages.create(thread_id, role="user", content=f"Sleep. {marker(tag)}")
            busy.append(a.beta.threads.runs.create(thread_id=thread_id, assistant_id=bot_a.id))
        for run in busy:
            wait_for(lambda run=run: a.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id).data,
                     timeout=10, what="the sleeping run's tool step")
        # The tool step opens while the model still writes the call; the sandbox is borrowed once it
        # has. Give both runs time to start their code on a loaded machine (it sleeps 12 s).
        time.sleep(3)
        tag = fake_upstream.script(*code_call("print(1)"))
        thread_id = a.beta.threads.create().id
        a.beta.threads.messages.create(thread_id, role="user", content=f"Run. {marker(tag)}")
        waiting = a.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=bot_a.id,
                                                      poll_interval_ms=POLL_MS, timeout=30)
        assert waiting.status == "failed"
        assert waiting.last_error.code == "server_error"
        assert "No code interpreter sandbox became free within 1 s" in waiting.last_error.message
        assert "2 per tenant" in waiting.last_error.message
        for run in busy:
            done = a.beta.threads.runs.poll(run.id, thread_id=run.thread_id, poll_interval_ms=POLL_MS)
            assert done.status == "completed", done.last_error
        assert len(containers_of(docker, instance)) <= 3
        assert all(r.status in TERMINAL for r in a.beta.threads.runs.list(thread_id).data)
