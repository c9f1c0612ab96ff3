"""The code_interpreter tool end to end: a scripted model calls it, the code really runs in the
Docker sandbox, and the outputs come back as run steps, file objects, message content, stream
events and the tool message the model reads (CONTRACT.md, issue 4)."""

from __future__ import annotations

import secrets

import pytest

from tests.conftest import make_client, make_http
from tests.support.fake import marker, read_sse
from tests.support.runs import POLL_MS, assistant
from tests.support.sandbox import CODE_INTERPRETER, code_call, code_result, containers_of, docker_client, instance_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def docker():
    return docker_client()


@pytest.fixture(scope="module")
def ci_server(docker, spawn):
    """One server for the module, with a warm pool so each test's new thread starts at once. At
    the end it is stopped and must leave no container behind."""
    server = spawn("code-interpreter", ASSISTANTD_SANDBOX_WARM_POOL="2")
    yield server
    server.stop()
    assert containers_of(docker, instance_of(server)) == []


@pytest.fixture
def client(ci_server):
    c = make_client(ci_server.base_url)
    yield c
    c.close()


@pytest.fixture
def http(ci_server):
    with make_http(ci_server.url) as h:
        yield h


@pytest.fixture
def tutor(client):
    return assistant(client, tools=[CODE_INTERPRETER])


def _run(client, thread_id: str, assistant_id: str):
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id,
                                                   poll_interval_ms=POLL_MS, timeout=60)
    assert run.status == "completed", run.last_error
    return run


def test_session_is_stateful_across_runs(client, fake_upstream, tutor):
    tag = fake_upstream.script(
        *code_call("secret = 41\nwith open('/mnt/data/note.txt', 'w') as f:\n    f.write('kept')\nprint('set')"),
        *code_call("print(secret + 1, open('/mnt/data/note.txt').read())"),
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"Remember this. {marker(tag)}"}])
    first = _run(client, thread.id, tutor.id)
    assert code_result(client, fake_upstream, first, tag)["logs"] == "set"

    client.beta.threads.messages.create(thread.id, role="user", content="Now read it back.")
    second = _run(client, thread.id, tutor.id)
    assert second.id != first.id
    result = code_result(client, fake_upstream, second, tag)
    # The variable and the file of run 1 are still there in run 2: one kernel per thread.
    assert result["logs"] == "42 kept"


CSV_IN = "a,b\n1,2\n3,4\n10,-5\n"
CSV_OUT = "a,b,total\n1,2,3\n3,4,7\n10,-5,5\n"


@pytest.mark.parametrize("via", ["attachment", "assistant", "thread"])
def test_file_in_transformed_file_out(client, fake_upstream, via):
    name = f"numbers-{secrets.token_hex(3)}.csv"
    upload = client.files.create(file=(name, CSV_IN.encode()), purpose="assistants")
    code = (
        "import pandas as pd\n"
        f"df = pd.read_csv('/mnt/data/{name}')\n"
        "df['total'] = df['a'] + df['b']\n"
        "df.to_csv('/mnt/data/out.csv', index=False)\n"
        "print(len(df), 'rows')"
    )
    answer = "Here it is: [out.csv](sandbox:/mnt/data/out.csv). Anything else?"
    tag = fake_upstream.script(*code_call(code, answer))
    resources = {"code_interpreter": {"file_ids": [upload.id]}}
    bot = assistant(client, tools=[CODE_INTERPRETER], **({"tool_resources": resources} if via == "assistant" else {}))
    message = {"role": "user", "content": f"Add the columns. {marker(tag)}"}
    if via == "attachment":
        message["attachments"] = [{"file_id": upload.id, "tools": [CODE_INTERPRETER]}]
    thread = client.beta.threads.create(messages=[message],
                                        **({"tool_resources": resources} if via == "thread" else {}))
    run = _run(client, thread.id, bot.id)

    result = code_result(client, fake_upstream, run, tag)
    assert result["logs"] == "3 rows", result["logs"]
    assert "/mnt/data/out.csv" in result["tool_message"]

    reply = client.beta.threads.messages.list(thread.id, order="desc", limit=1).data[0]
    assert reply.role == "assistant" and reply.run_id == run.id
    assert [part.type for part in reply.content] == ["text"]
    text = reply.content[0].text
    assert text.value == answer
    [note] = text.annotations
    start = answer.index("sandbox:/mnt/data/out.csv")
    assert note.type == "file_path"
    assert (note.start_index, note.end_index) == (start, start + len("sandbox:/mnt/data/out.csv"))
    assert note.text == answer[note.start_index:note.end_index]

    produced = client.files.retrieve(note.file_path.file_id)
    assert produced.purpose == "assistants_output"
    assert produced.filename == "out.csv"
    assert produced.bytes == len(CSV_OUT)
    assert client.files.content(produced.id).read() == CSV_OUT.encode()
    # The input file was placed, not written by the code: it is not handed back as an output.
    assert name not in result["tool_message"]


def test_matplotlib_chart_becomes_image_file(client, fake_upstream, tutor):
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "print('plotted')"
    )
    tag = fake_upstream.script(*code_call(code, "The chart shows the squares."))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"Plot it. {marker(tag)}"}])
    run = _run(client, thread.id, tutor.id)

    result = code_result(client, fake_upstream, run, tag)
    kinds = [o.type for o in result["outputs"]]
    assert kinds == ["logs", "image"], kinds
    assert result["logs"] == "plotted"
    image_id = result["outputs"][1].image.file_id

    reply = client.beta.threads.messages.list(thread.id, order="desc", limit=1).data[0]
    assert [part.type for part in reply.content] == ["image_file", "text"]
    assert reply.content[0].image_file.file_id == image_id
    assert reply.content[1].text.value == "The chart shows the squares."

    image = client.files.retrieve(image_id)
    assert image.purpose == "assistants_output"
    data = client.files.content(image_id).read()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_streaming_shows_code_then_outputs(client, http, fake_upstream, tutor):
    # Quotes, a backslash, newlines and non-ASCII: the code is streamed out of its JSON wrapping.
    code = 'word = "naïve \\"quoted\\""\nfor i in range(3):\n    print(i, word[:5], "\\\\")\nprint("done ✓")'
    tag = fake_upstream.script(*code_call(code, "Printed."))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"Stream it. {marker(tag)}"}])
    events = read_sse(http, "POST", f"/v1/threads/{thread.id}/runs",
                      json={"assistant_id": tutor.id, "stream": True}, timeout=60)
    names = [name for name, _ in events]
    assert names[-2:] == ["thread.run.completed", "done"], names

    inputs, outputs, after_outputs = [], [], False
    for name, data in events:
        if name != "thread.run.step.delta":
            continue
        for call in data["delta"]["step_details"].get("tool_calls", []):
            if call["type"] != "code_interpreter":
                continue
            ci = call.get("code_interpreter", {})
            if ci.get("input"):
                assert not after_outputs, "code streamed after its outputs"
                inputs.append(ci["input"])
            if ci.get("outputs"):
                after_outputs = True
                outputs += ci["outputs"]
    assert len(inputs) > 1, "the code should arrive in pieces"
    assert "".join(inputs) == code
    expected_logs = "0 naïve \\\n1 naïve \\\n2 naïve \\\ndone ✓"
    assert outputs == [{"index": 0, "type": "logs", "logs": expected_logs}]

    step_id = next(d["id"] for n, d in events
                   if n == "thread.run.step.completed" and d["type"] == "tool_calls")
    run_id = next(d["id"] for n, d in events if n == "thread.run.completed")
    step = client.beta.threads.runs.steps.retrieve(step_id, thread_id=thread.id, run_id=run_id)
    [call] = step.step_details.tool_calls
    assert call.type == "code_interpreter"
    assert call.code_interpreter.input == code
    assert [o.model_dump() for o in call.code_interpreter.outputs] == [{"type": "logs", "logs": expected_logs}]

    # The model was told what the code printed, as the result of its own tool call.
    follow_up = fake_upstream.requests(tag)[-1]["messages"]
    [asked] = [m for m in follow_up if m["role"] == "assistant" and m.get("tool_calls")]
    assert asked["tool_calls"][0]["function"]["name"] == "code_interpreter"
    assert follow_up[-1]["role"] == "tool"
    assert follow_up[-1]["tool_call_id"] == asked["tool_calls"][0]["id"]
    assert expected_logs in follow_up[-1]["content"]


def test_exception_gives_traceback_and_run_completes(client, fake_upstream, tutor):
    code = "def ratio(a, b):\n    return a / b\nprint('before')\nratio(1, 0)"
    tag = fake_upstream.script(*code_call(code, "That divided by zero."))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"Divide. {marker(tag)}"}])
    run = _run(client, thread.id, tutor.id)
    result = code_result(client, fake_upstream, run, tag)
    logs = result["logs"]
    assert logs.startswith("before\n")
    assert "Traceback (most recent call last)" in logs
    assert "in ratio" in logs and "ZeroDivisionError: division by zero" in logs
    assert "kernel.py" not in logs  # the kernel's own frames are not the user's business
    assert "ZeroDivisionError: division by zero" in result["tool_message"]
    reply = client.beta.threads.messages.list(thread.id, order="desc", limit=1).data[0]
    assert reply.content[0].text.value == "That divided by zero."
