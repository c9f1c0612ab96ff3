"""Threads and their messages: create (with initial messages), retrieve, update, delete; message
create/list/retrieve/update/delete; the wire shape of ``thread`` and ``thread.message``; 404s."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time

import openai
import pytest

MESSAGE_FIELDS = ("id", "object", "created_at", "thread_id", "status", "incomplete_details",
                  "completed_at", "incomplete_at", "role", "content", "assistant_id", "run_id",
                  "attachments", "metadata")

# A 1×1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def upload(client, name: str = "notes.txt", data: bytes | None = None, purpose: str = "assistants") -> str:
    data = data if data is not None else secrets.token_bytes(16)
    return client.files.create(file=(name, data), purpose=purpose).id


def count_rows(server, table: str, **where: str) -> int:
    """Rows in ``table`` of ``server``'s own database (SQLite file or PostgreSQL)."""
    columns = list(where)
    url = server.env.get("ASSISTANTD_DATABASE_URL")
    if url is None:
        sql = f"SELECT count(*) FROM {table}" + (
            " WHERE " + " AND ".join(f"{c} = ?" for c in columns) if columns else "")
        with contextlib.closing(sqlite3.connect(server.data_dir / "assistantd.db")) as db:
            return db.execute(sql, [where[c] for c in columns]).fetchone()[0]
    import asyncpg

    sql = f"SELECT count(*) FROM {table}" + (
        " WHERE " + " AND ".join(f"{c} = ${i + 1}" for i, c in enumerate(columns)) if columns else "")

    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql, *[where[c] for c in columns])
        finally:
            await conn.close()

    return asyncio.run(run())


def text_part(value: str) -> dict:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def assert_message_shape(message: dict, thread_id: str) -> None:
    for field in MESSAGE_FIELDS:
        assert field in message, f"missing {field}"
    assert message["object"] == "thread.message"
    assert message["id"].startswith("msg_")
    assert message["thread_id"] == thread_id
    assert type(message["created_at"]) is int
    assert abs(message["created_at"] - time.time()) < 120
    assert message["status"] == "completed"
    assert message["incomplete_details"] is None
    assert message["incomplete_at"] is None
    assert message["assistant_id"] is None
    assert message["run_id"] is None
    assert isinstance(message["attachments"], list)
    assert isinstance(message["metadata"], dict)
    assert isinstance(message["content"], list) and message["content"]
    for part in message["content"]:
        if part["type"] == "text":
            assert part["text"]["annotations"] == []


def new_thread(http, **body) -> dict:
    r = http.post("/v1/threads", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def list_all(http, thread_id: str, **params) -> list[dict]:
    r = http.get(f"/v1/threads/{thread_id}/messages", params={"limit": 100, "order": "asc", **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


# --- threads -----------------------------------------------------------------------------------

def test_create_empty_thread(client, http):
    for response in (http.post("/v1/threads", json={}), http.post("/v1/threads")):
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"id", "object", "created_at", "tool_resources", "metadata"}
        assert body["object"] == "thread"
        assert body["id"].startswith("thread_")
        assert type(body["created_at"]) is int
        assert abs(body["created_at"] - time.time()) < 120
        assert body["metadata"] == {}
        assert not (body["tool_resources"] or {}).get("code_interpreter", {}).get("file_ids")
        assert list_all(http, body["id"]) == []

    thread = client.beta.threads.create()
    assert thread.id.startswith("thread_")
    assert thread.object == "thread"
    assert thread.metadata == {}
    assert client.beta.threads.messages.list(thread.id).data == []


def test_create_thread_with_initial_messages(client, http):
    image = upload(client, "dot.png", PNG, purpose="vision")
    attached = upload(client, "data.csv", b"a,b\n1,2\n")
    requested = [
        {"role": "user", "content": "Plain string content"},
        {"role": "assistant", "content": [{"type": "text", "text": "An assistant turn"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Look at these"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "image_file", "image_file": {"file_id": image, "detail": "high"}},
        ], "attachments": [{"file_id": attached, "tools": [{"type": "code_interpreter"}]}],
            "metadata": {"turn": "3"}},
    ]
    thread = new_thread(http, messages=requested, metadata={"user": "u1"})
    assert thread["metadata"] == {"user": "u1"}

    messages = list_all(http, thread["id"])
    assert len(messages) == 3
    for message in messages:
        assert_message_shape(message, thread["id"])
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == [text_part("Plain string content")]
    assert messages[1]["content"] == [text_part("An assistant turn")]
    assert messages[2]["content"] == [
        text_part("Look at these"),
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_file", "image_file": {"file_id": image, "detail": "high"}},
    ]
    assert messages[0]["attachments"] == [] and messages[0]["metadata"] == {}
    assert messages[2]["attachments"] == [{"file_id": attached, "tools": [{"type": "code_interpreter"}]}]
    assert messages[2]["metadata"] == {"turn": "3"}
    assert len({m["id"] for m in messages}) == 3

    # Default order is newest first.
    desc = http.get(f"/v1/threads/{thread['id']}/messages").json()["data"]
    assert [m["id"] for m in desc] == [m["id"] for m in messages][::-1]


def test_create_thread_with_messages_through_sdk(client):
    image = upload(client, "dot.png", PNG, purpose="vision")
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "Solve 3x + 11 = 14."},
            {"role": "user", "content": [
                {"type": "image_file", "image_file": {"file_id": image}},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
            ]},
        ],
        metadata={"source": "sdk"},
    )
    assert thread.metadata == {"source": "sdk"}
    messages = list(client.beta.threads.messages.list(thread.id, order="asc"))
    assert len(messages) == 2
    first, second = messages
    assert first.content[0].type == "text"
    assert first.content[0].text.value == "Solve 3x + 11 = 14."
    assert first.content[0].text.annotations == []
    assert first.status == "completed"
    assert first.assistant_id is None and first.run_id is None
    assert [p.type for p in second.content] == ["image_file", "image_url"]
    assert second.content[0].image_file.file_id == image
    assert second.content[1].image_url.url == "https://example.com/x.png"


def test_thread_tool_resources(client, http):
    files = [upload(client), upload(client)]
    thread = new_thread(http, tool_resources={"code_interpreter": {"file_ids": files}})
    assert thread["tool_resources"]["code_interpreter"]["file_ids"] == files
    fetched = client.beta.threads.retrieve(thread["id"])
    assert fetched.tool_resources.code_interpreter.file_ids == files

    r = http.post("/v1/threads", json={"tool_resources": {"code_interpreter": {"file_ids": ["file-nope"]}}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tool_resources.code_interpreter.file_ids[0]"


def test_retrieve_update_delete_thread(client, http):
    file_id = upload(client)
    thread = client.beta.threads.create(metadata={"a": "1", "b": "2"})
    fetched = client.beta.threads.retrieve(thread.id)
    assert (fetched.id, fetched.created_at, fetched.metadata) == (thread.id, thread.created_at, {"a": "1", "b": "2"})

    updated = client.beta.threads.update(thread.id, metadata={"c": "3"})
    assert updated.metadata == {"c": "3"}  # replaced as a whole
    assert updated.created_at == thread.created_at

    # Updating tool_resources leaves metadata alone, and vice versa.
    raw = http.post(f"/v1/threads/{thread.id}",
                    json={"tool_resources": {"code_interpreter": {"file_ids": [file_id]}}})
    assert raw.status_code == 200, raw.text
    assert raw.json()["metadata"] == {"c": "3"}
    assert raw.json()["tool_resources"]["code_interpreter"]["file_ids"] == [file_id]
    raw = http.post(f"/v1/threads/{thread.id}", json={"metadata": {"d": "4", "gone": None}})
    assert raw.json()["metadata"] == {"d": "4"}
    assert raw.json()["tool_resources"]["code_interpreter"]["file_ids"] == [file_id]
    assert http.get(f"/v1/threads/{thread.id}").json() == raw.json()

    deleted = client.beta.threads.delete(thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (thread.id, "thread.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.update(thread.id, metadata={"x": "y"})
    r = http.delete(f"/v1/threads/{thread.id}")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_deleting_thread_deletes_its_messages(client, http, server):
    thread = new_thread(http, messages=[{"role": "user", "content": "one"},
                                        {"role": "user", "content": "two"}])
    extra = client.beta.threads.messages.create(thread["id"], role="user", content="three")
    ids = [m["id"] for m in list_all(http, thread["id"])]
    assert len(ids) == 3 and extra.id in ids
    assert count_rows(server, "messages", thread_id=thread["id"]) == 3

    assert http.delete(f"/v1/threads/{thread['id']}").status_code == 200
    for message_id in ids:
        r = http.get(f"/v1/threads/{thread['id']}/messages/{message_id}")
        assert r.status_code == 404
    assert http.get(f"/v1/threads/{thread['id']}/messages").status_code == 404
    assert count_rows(server, "messages", thread_id=thread["id"]) == 0
    assert count_rows(server, "threads", id=thread["id"]) == 0


def test_unknown_thread_is_404_everywhere(client, http):
    missing = "thread_doesnotexist"
    calls = [
        ("GET", f"/v1/threads/{missing}", None),
        ("POST", f"/v1/threads/{missing}", {"metadata": {}}),
        ("DELETE", f"/v1/threads/{missing}", None),
        ("GET", f"/v1/threads/{missing}/messages", None),
        ("POST", f"/v1/threads/{missing}/messages", {"role": "user", "content": "hi"}),
        ("GET", f"/v1/threads/{missing}/messages/msg_x", None),
        ("POST", f"/v1/threads/{missing}/messages/msg_x", {"metadata": {}}),
        ("DELETE", f"/v1/threads/{missing}/messages/msg_x", None),
    ]
    for method, path, body in calls:
        r = http.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(missing)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list(missing)


# --- messages ----------------------------------------------------------------------------------

def test_message_create_retrieve_shape(client, http):
    file_id = upload(client)
    thread = new_thread(http)
    r = http.post(f"/v1/threads/{thread['id']}/messages", json={
        "role": "user",
        "content": "What is in this file?",
        "attachments": [{"file_id": file_id, "tools": [{"type": "file_search"}, {"type": "code_interpreter"}]}],
        "metadata": {"k": "v"},
    })
    assert r.status_code == 200, r.text
    message = r.json()
    assert_message_shape(message, thread["id"])
    assert message["role"] == "user"
    assert message["content"] == [text_part("What is in this file?")]
    assert message["attachments"] == [{"file_id": file_id,
                                       "tools": [{"type": "file_search"}, {"type": "code_interpreter"}]}]
    assert message["metadata"] == {"k": "v"}

    fetched = http.get(f"/v1/threads/{thread['id']}/messages/{message['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == message

    sdk = client.beta.threads.messages.retrieve(message["id"], thread_id=thread["id"])
    assert sdk.id == message["id"]
    assert sdk.thread_id == thread["id"]
    assert sdk.content[0].text.value == "What is in this file?"
    assert sdk.attachments[0].file_id == file_id
    assert [t.type for t in sdk.attachments[0].tools] == ["file_search", "code_interpreter"]


def test_message_content_parts_through_sdk(client):
    image = upload(client, "dot.png", PNG, purpose="vision")
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread.id,
        role="assistant",
        content=[
            {"type": "text", "text": "first"},
            {"type": "image_file", "image_file": {"file_id": image, "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/y.jpg", "detail": "auto"}},
            {"type": "text", "text": "second"},
        ],
    )
    assert message.role == "assistant"
    assert message.status == "completed"
    assert message.assistant_id is None and message.run_id is None
    assert message.attachments == []
    assert [p.type for p in message.content] == ["text", "image_file", "image_url", "text"]
    assert message.content[0].text.value == "first"
    assert message.content[0].text.annotations == []
    assert message.content[1].image_file.file_id == image
    assert message.content[1].image_file.detail == "low"
    assert message.content[2].image_url.url == "https://example.com/y.jpg"
    assert message.content[3].text.value == "second"


def test_message_list_order_and_run_filter(client, http):
    thread = client.beta.threads.create()
    made = [client.beta.threads.messages.create(thread.id, role="user", content=f"m{i}").id for i in range(4)]
    assert [m.id for m in client.beta.threads.messages.list(thread.id)] == made[::-1]
    assert [m.id for m in client.beta.threads.messages.list(thread.id, order="asc")] == made
    assert [m.id for m in client.beta.threads.messages.list(thread.id, order="desc")] == made[::-1]

    raw = http.get(f"/v1/threads/{thread.id}/messages", params={"run_id": "run_doesnotexist"})
    assert raw.status_code == 200
    assert raw.json()["data"] == []
    assert raw.json()["has_more"] is False
    assert raw.json()["first_id"] is None and raw.json()["last_id"] is None
    assert client.beta.threads.messages.list(thread.id, run_id="run_doesnotexist").data == []


def test_message_update_metadata(client, http):
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread.id, role="user", content="hi", metadata={"a": "1"})
    updated = client.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"b": "2"})
    assert updated.id == message.id
    assert updated.metadata == {"b": "2"}
    assert updated.content[0].text.value == "hi"
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id).metadata == {"b": "2"}

    before = http.get(f"/v1/threads/{thread.id}/messages/{message.id}").json()
    r = http.post(f"/v1/threads/{thread.id}/messages/{message.id}", json={})
    assert r.status_code == 200
    assert r.json() == before

    r = http.post(f"/v1/threads/{thread.id}/messages/{message.id}", json={"metadata": {"b": None, "c": "3"}})
    assert r.status_code == 200
    assert r.json()["metadata"] == {"c": "3"}

    # Only metadata can change.
    r = http.post(f"/v1/threads/{thread.id}/messages/{message.id}", json={"content": "changed"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "content"
    assert http.get(f"/v1/threads/{thread.id}/messages/{message.id}").json()["content"] == [text_part("hi")]


def test_message_delete(client, http):
    thread = client.beta.threads.create()
    keep = client.beta.threads.messages.create(thread.id, role="user", content="keep")
    drop = client.beta.threads.messages.create(thread.id, role="user", content="drop")
    deleted = client.beta.threads.messages.delete(drop.id, thread_id=thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (drop.id, "thread.message.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(drop.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.update(drop.id, thread_id=thread.id, metadata={"x": "y"})
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.delete(drop.id, thread_id=thread.id)
    assert [m.id for m in client.beta.threads.messages.list(thread.id)] == [keep.id]
    assert client.beta.threads.retrieve(thread.id).id == thread.id


def test_message_ids_are_scoped_to_their_thread(client, http):
    one = client.beta.threads.create()
    two = client.beta.threads.create()
    message = client.beta.threads.messages.create(one.id, role="user", content="belongs to one")
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=two.id)
    for method, body in (("GET", None), ("POST", {"metadata": {"x": "y"}}), ("DELETE", None)):
        r = http.request(method, f"/v1/threads/{two.id}/messages/{message.id}", json=body)
        assert r.status_code == 404, (method, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    # Nothing happened to it under its own thread.
    fetched = client.beta.threads.messages.retrieve(message.id, thread_id=one.id)
    assert fetched.metadata == {}
    assert client.beta.threads.messages.list(two.id).data == []


def test_unknown_message_is_404(client, http):
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve("msg_doesnotexist", thread_id=thread.id)
    r = http.get(f"/v1/threads/{thread.id}/messages/msg_doesnotexist")
    assert r.status_code == 404
    assert "msg_doesnotexist" in r.json()["error"]["message"]


def test_message_with_unknown_or_deleted_file_writes_nothing(client, http):
    thread = client.beta.threads.create()
    gone = upload(client)
    client.files.delete(gone)
    bodies = [
        ({"role": "user", "content": "x", "attachments": [{"file_id": "file-nope"}]}, "attachments[0].file_id"),
        ({"role": "user", "content": "x", "attachments": [{"file_id": gone, "tools": []}]}, "attachments[0].file_id"),
        ({"role": "user", "content": [{"type": "text", "text": "x"},
                                      {"type": "image_file", "image_file": {"file_id": "file-nope"}}]},
         "content[1].image_file.file_id"),
    ]
    for body, param in bodies:
        r = http.post(f"/v1/threads/{thread.id}/messages", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["param"] == param
    assert client.beta.threads.messages.list(thread.id).data == []
