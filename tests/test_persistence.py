"""State survives a clean restart and a SIGKILL: assistants, threads, messages, files and their bytes."""

from __future__ import annotations

import os

import pytest

from tests.conftest import make_http


def _snapshot(server, state: dict) -> dict:
    """Everything the API shows about the objects in ``state``, as raw JSON."""
    with make_http(server.url) as http:
        def get(path: str, **params):
            r = http.get(path, params=params)
            assert r.status_code == 200, r.text
            return r.json() if r.headers["content-type"].startswith("application/json") else r.content

        snap = {
            "assistants": [get(f"/v1/assistants/{i}") for i in state["assistants"]],
            "assistant_list": get("/v1/assistants", order="asc", limit=100),
            "threads": [get(f"/v1/threads/{i}") for i in state["threads"]],
            "messages": {t: get(f"/v1/threads/{t}/messages", order="asc", limit=100)
                         for t in state["threads"]},
            "files": [get(f"/v1/files/{i}") for i in state["files"]],
            "file_list": get("/v1/files", order="asc"),
            "contents": [get(f"/v1/files/{i}/content") for i in state["files"]],
            "message": [get(f"/v1/threads/{t}/messages/{m}") for t, m in state["messages"]],
        }
    return snap


def _populate(server) -> tuple[dict, dict]:
    """Create one of everything over HTTP; return the ids and the created objects."""
    state = {"assistants": [], "threads": [], "files": [], "messages": []}
    created = {"files_bytes": {}}
    with make_http(server.url) as http:
        payloads = [os.urandom(1500) + b"\x00\x00end", b"plain text\n", b""]
        for i, data in enumerate(payloads):
            extra = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "86400"} if i == 0 else {}
            r = http.post("/v1/files", files={"file": (f"f{i}.bin", data)},
                          data={"purpose": "assistants", **extra})
            assert r.status_code == 200, r.text
            state["files"].append(r.json()["id"])
            created["files_bytes"][r.json()["id"]] = data
        f0, f1, _ = state["files"]

        r = http.post("/v1/assistants", json={
            "model": "gpt-4o", "name": "Math Tutor", "description": "helps with algebra",
            "instructions": "You are a personal math tutor. " * 50,
            "tools": [{"type": "code_interpreter"},
                      {"type": "function", "function": {
                          "name": "lookup", "description": "look something up",
                          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                          "strict": False}}],
            "tool_resources": {"code_interpreter": {"file_ids": [f0, f1]}},
            "metadata": {"k": "v", "unicode": "ünï 📄"},
            "temperature": 0.25, "top_p": 0.5,
            "response_format": {"type": "json_object"},
        })
        assert r.status_code == 200, r.text
        state["assistants"].append(r.json()["id"])
        r = http.post("/v1/assistants", json={"model": "gpt-4o-mini"})
        assert r.status_code == 200, r.text
        state["assistants"].append(r.json()["id"])

        r = http.post("/v1/threads", json={
            "messages": [
                {"role": "user", "content": "Solve 3x + 11 = 14.", "metadata": {"n": "1"},
                 "attachments": [{"file_id": f1, "tools": [{"type": "code_interpreter"}]}]},
                {"role": "assistant", "content": [{"type": "text", "text": "x = 1"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "and this image?"},
                    {"type": "image_file", "image_file": {"file_id": f0, "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            ],
            "tool_resources": {"code_interpreter": {"file_ids": [f0]}},
            "metadata": {"topic": "algebra"},
        })
        assert r.status_code == 200, r.text
        thread = r.json()["id"]
        state["threads"].append(thread)
        r = http.post(f"/v1/threads/{thread}/messages", json={"role": "user", "content": "thanks"})
        assert r.status_code == 200, r.text
        state["messages"].append((thread, r.json()["id"]))

        r = http.post("/v1/threads", json={})
        assert r.status_code == 200, r.text
        state["threads"].append(r.json()["id"])
    return state, created


@pytest.fixture(scope="module")
def persisted(spawn):
    server = spawn("persist")
    state, created = _populate(server)
    before = _snapshot(server, state)
    # Sanity: the snapshot holds what was created.
    assert [len(before["messages"][t]["data"]) for t in state["threads"]] == [4, 0]
    assert before["contents"] == [created["files_bytes"][f] for f in state["files"]]
    return server, state, before


def test_everything_survives_restart(persisted):
    server, state, before = persisted
    pid = server.proc.pid
    server.restart()
    assert server.proc.pid != pid
    assert _snapshot(server, state) == before
    for file_id in state["files"]:
        assert (server.data_dir / "files" / file_id).exists()


def test_everything_survives_sigkill(persisted):
    server, state, before = persisted
    server.kill()
    assert server.proc.returncode == -9
    server.start()
    assert _snapshot(server, state) == before


def test_last_write_before_sigkill_is_kept(persisted):
    server, state, _ = persisted
    with make_http(server.url) as http:
        thread = state["threads"][1]
        message = http.post(f"/v1/threads/{thread}/messages",
                            json={"role": "user", "content": "written just before the crash"}).json()
        r = http.post("/v1/files", files={"file": ("late.bin", b"\x00late\x00")},
                      data={"purpose": "user_data"})
        file = r.json()
        r = http.post(f"/v1/assistants/{state['assistants'][1]}", json={"name": "renamed",
                                                                         "metadata": {"v": "2"}})
        assistant = r.json()
        r = http.delete(f"/v1/assistants/{state['assistants'][0]}")
        assert r.json()["deleted"] is True
    server.kill()
    server.start()
    with make_http(server.url) as http:
        assert http.get(f"/v1/threads/{thread}/messages/{message['id']}").json() == message
        assert http.get(f"/v1/files/{file['id']}").json() == file
        assert http.get(f"/v1/files/{file['id']}/content").content == b"\x00late\x00"
        assert http.get(f"/v1/assistants/{state['assistants'][1]}").json() == assistant
        assert http.get(f"/v1/assistants/{state['assistants'][0]}").status_code == 404
        listed = http.get("/v1/assistants", params={"order": "asc"}).json()
        assert [a["id"] for a in listed["data"]] == [state["assistants"][1]]


def test_new_objects_list_after_old_ones_after_restart(persisted):
    server, state, _ = persisted
    server.restart()
    with make_http(server.url) as http:
        r = http.post("/v1/files", files={"file": ("newest.txt", b"new")}, data={"purpose": "assistants"})
        newest = r.json()["id"]
        listed = http.get("/v1/files").json()["data"]
        assert listed[0]["id"] == newest
        assert [f["id"] for f in listed][-len(state["files"]):] == state["files"][::-1]
        r = http.post(f"/v1/threads/{state['threads'][0]}/messages", json={"role": "user", "content": "later"})
        latest = r.json()["id"]
        msgs = http.get(f"/v1/threads/{state['threads'][0]}/messages").json()["data"]
        assert msgs[0]["id"] == latest and len(msgs) == 5
