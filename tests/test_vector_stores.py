"""``/v1/vector_stores``: stores, files, batches, content, ingestion, validation and the
``tool_resources.file_search`` wiring, driven with the official SDK's helpers."""

from __future__ import annotations

import time

import openai
import pytest

from tests.support.documents import docx_with_text, pdf_with_text

AUTO = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


def _error(response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def _wait_store(client, vs_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store = client.vector_stores.retrieve(vs_id)
        if store.file_counts.in_progress == 0:
            return store
        time.sleep(0.1)
    raise AssertionError("vector store still in progress")


# --- stores ------------------------------------------------------------------------------------

def test_store_create_retrieve_update_list_delete(client):
    before = int(time.time())
    store = client.vector_stores.create(name="docs", metadata={"team": "a"},
                                        expires_after={"anchor": "last_active_at", "days": 7})
    assert store.id.startswith("vs_") and store.object == "vector_store"
    assert store.name == "docs" and store.metadata == {"team": "a"}
    assert store.status == "completed" and store.usage_bytes == 0
    assert store.file_counts.model_dump() == {"in_progress": 0, "completed": 0, "failed": 0,
                                              "cancelled": 0, "total": 0}
    assert before <= store.last_active_at <= int(time.time())
    assert store.expires_after.model_dump() == {"anchor": "last_active_at", "days": 7}
    assert store.expires_at == store.last_active_at + 7 * 86400

    assert client.vector_stores.retrieve(store.id).model_dump() == store.model_dump()
    updated = client.vector_stores.update(store.id, name="renamed", metadata={"team": "b"},
                                          expires_after={"anchor": "last_active_at", "days": 1})
    assert updated.name == "renamed" and updated.metadata == {"team": "b"}
    assert updated.expires_at == updated.last_active_at + 86400
    assert store.id in {s.id for s in client.vector_stores.list(limit=100)}

    deleted = client.vector_stores.delete(store.id)
    assert deleted.deleted and deleted.id == store.id and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_store_without_expiry_or_name(http):
    raw = http.post("/v1/vector_stores", json={}).json()
    assert raw["expires_at"] is None and "expires_after" not in raw
    assert raw["name"] == ""


def test_list_pages(client):
    ids = [client.vector_stores.create(name=f"p{i}").id for i in range(3)]
    page = client.vector_stores.list(limit=2, order="asc", after=ids[0])
    assert [s.id for s in page.data] == ids[1:]


# --- files -------------------------------------------------------------------------------------

def test_upload_and_poll_file_content_attributes_delete(client):
    store = client.vector_stores.create(name="one")
    text = "The quick brown fox jumps over the lazy dog.\n" * 5
    vs_file = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("fox.txt", text.encode()), attributes={"lang": "en", "n": 3},
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}},
        poll_interval_ms=100)
    assert vs_file.object == "vector_store.file" and vs_file.vector_store_id == store.id
    assert vs_file.status == "completed" and vs_file.last_error is None
    assert vs_file.usage_bytes > 0
    assert vs_file.attributes == {"lang": "en", "n": 3}
    assert vs_file.chunking_strategy.model_dump() == {
        "type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}

    content = client.vector_stores.files.content(vs_file.id, vector_store_id=store.id)
    assert "".join(part.text for part in content) == text

    store = client.vector_stores.retrieve(store.id)
    assert store.file_counts.completed == 1 and store.file_counts.total == 1
    assert store.usage_bytes == vs_file.usage_bytes and store.status == "completed"
    assert [f.id for f in client.vector_stores.files.list(store.id, filter="completed")] == [vs_file.id]
    assert list(client.vector_stores.files.list(store.id, filter="failed")) == []

    updated = client.vector_stores.files.update(vs_file.id, vector_store_id=store.id,
                                                attributes={"lang": "fr", "draft": True})
    assert updated.attributes == {"lang": "fr", "draft": True}
    assert client.vector_stores.files.retrieve(vs_file.id, vector_store_id=store.id).attributes == updated.attributes

    deleted = client.vector_stores.files.delete(vs_file.id, vector_store_id=store.id)
    assert deleted.deleted and deleted.object == "vector_store.file.deleted"
    assert client.files.retrieve(vs_file.id).id == vs_file.id  # the file itself is kept
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(vs_file.id, vector_store_id=store.id)
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0


def test_create_and_poll_auto_chunking_echoed(client):
    store = client.vector_stores.create()
    f = client.files.create(file=("a.md", b"# Title\n\nSome *markdown* text."), purpose="assistants")
    vs_file = client.vector_stores.files.create_and_poll(f.id, vector_store_id=store.id, poll_interval_ms=100)
    assert vs_file.status == "completed"
    assert vs_file.chunking_strategy.model_dump() == AUTO


def test_store_created_with_file_ids_ingests_them(client):
    a = client.files.create(file=("a.txt", b"alpha"), purpose="assistants")
    b = client.files.create(file=("b.json", b'{"beta": 1}'), purpose="assistants")
    store = client.vector_stores.create(file_ids=[a.id, b.id])
    assert store.file_counts.total == 2
    store = _wait_store(client, store.id)
    assert store.file_counts.completed == 2 and store.status == "completed"


def test_formats_and_failures_in_a_batch(client):
    store = client.vector_stores.create(name="mixed")
    html = b"<html><head><style>p{}</style><script>var x;</script></head><body><h1>Heading</h1><p>Hello &amp; welcome</p></body></html>"
    uploads = [
        ("page.html", html),
        ("data.csv", b"name,age\nada,36\n"),
        ("code.py", b"def answer():\n    return 42\n"),
        ("report.pdf", pdf_with_text("Quarterly revenue grew by eleven percent.")),
        ("memo.docx", docx_with_text("The memo says the launch is on Tuesday.")),
        ("binary.exe", b"MZ\x00\x01\x02"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf"),
        ("latin.txt", b"caf\xe9 \xff\xfe\x00"),
    ]
    batch = client.vector_stores.file_batches.upload_and_poll(store.id, files=uploads, poll_interval_ms=100)
    assert batch.object == "vector_store.files_batch" and batch.vector_store_id == store.id
    assert batch.file_counts.model_dump() == {"in_progress": 0, "completed": 5, "failed": 3,
                                              "cancelled": 0, "total": 8}
    assert batch.status == "completed"
    files = {f.id: f for f in client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)}
    names = {client.files.retrieve(fid).filename: f for fid, f in files.items()}
    assert names["binary.exe"].status == "failed"
    assert names["binary.exe"].last_error.code == "unsupported_file"
    assert names["broken.pdf"].last_error.code == "invalid_file"
    assert names["latin.txt"].last_error.code == "invalid_file"
    assert all(names[n].last_error.message for n in ("binary.exe", "broken.pdf", "latin.txt"))
    failed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, filter="failed")
    assert len(failed.data) == 3

    def text_of(name):
        page = client.vector_stores.files.content(names[name].id, vector_store_id=store.id)
        return "".join(p.text for p in page)

    assert text_of("page.html") == "Heading\nHello & welcome"
    assert "Quarterly revenue grew by eleven percent." in text_of("report.pdf")
    assert "launch is on Tuesday" in text_of("memo.docx")
    assert "return 42" in text_of("code.py")
    store = client.vector_stores.retrieve(store.id)
    assert store.file_counts.completed == 5 and store.file_counts.failed == 3 and store.status == "completed"


def test_batch_with_files_and_cancel(client, http):
    store = client.vector_stores.create()
    ids = [client.files.create(file=(f"f{i}.txt", f"document number {i} ".encode() * 2000),
                               purpose="assistants").id for i in range(60)]
    # ``files`` (per-file attributes) is newer than openai 1.109.1's ``file_batches.create``.
    batch = http.post(f"/v1/vector_stores/{store.id}/file_batches", json={
        "files": [{"file_id": fid, "attributes": {"i": i}} for i, fid in enumerate(ids)]}).json()
    assert batch["file_counts"]["total"] == 60
    cancelled = client.vector_stores.file_batches.cancel(batch["id"], vector_store_id=store.id)
    batch = client.vector_stores.file_batches.retrieve(batch["id"], vector_store_id=store.id)
    assert cancelled.status == "cancelled" and cancelled.file_counts.in_progress == 0
    counts = cancelled.file_counts
    assert counts.cancelled + counts.completed == 60 and counts.cancelled >= 1
    time.sleep(0.5)  # a file being ingested while cancelled stays cancelled
    again = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert again.file_counts.model_dump() == counts.model_dump()
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, filter="cancelled", limit=100)
    assert len(listed.data) == counts.cancelled
    assert all(f.attributes == {"i": ids.index(f.id)} for f in listed.data)


def test_batch_create_and_poll_file_ids(client):
    store = client.vector_stores.create()
    ids = [client.files.create(file=(f"g{i}.txt", b"hello world"), purpose="assistants").id for i in range(3)]
    batch = client.vector_stores.file_batches.create_and_poll(store.id, file_ids=ids, poll_interval_ms=100)
    assert batch.status == "completed" and batch.file_counts.completed == 3
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 3


# --- validation --------------------------------------------------------------------------------

STATIC = "chunking_strategy.static"


@pytest.mark.parametrize("body, param", [
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}},
      "file_ids": ["X"]}, f"{STATIC}.max_chunk_size_tokens"),
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}}},
     f"{STATIC}.max_chunk_size_tokens"),
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 201}}},
     f"{STATIC}.chunk_overlap_tokens"),
    ({"chunking_strategy": {"type": "fancy"}}, "chunking_strategy.type"),
    ({"expires_after": {"anchor": "last_active_at", "days": 0}}, "expires_after.days"),
    ({"expires_after": {"anchor": "last_active_at", "days": 366}}, "expires_after.days"),
    ({"expires_after": {"anchor": "created_at", "days": 3}}, "expires_after.anchor"),
    ({"file_ids": ["file-x"] * 501}, "file_ids"),
    ({"file_ids": ["file-nope"]}, "file_ids[0]"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"bogus": 1}, "bogus"),
])
def test_create_store_validation(http, body, param):
    count = len(http.get("/v1/vector_stores", params={"limit": 100}).json()["data"])
    response = http.post("/v1/vector_stores", json=body)
    assert response.status_code == 400, response.text
    assert _error(response)["param"] == param
    assert len(http.get("/v1/vector_stores", params={"limit": 100}).json()["data"]) == count


def test_file_and_batch_and_search_validation(client, http):
    vs = client.vector_stores.create().id
    f = client.files.create(file=("v.txt", b"text"), purpose="assistants").id
    cases = [
        (f"/v1/vector_stores/{vs}/files", {"file_id": "file-nope"}, "file_id"),
        (f"/v1/vector_stores/{vs}/files", {"file_id": f, "attributes": {f"k{i}": 1 for i in range(17)}}, "attributes"),
        (f"/v1/vector_stores/{vs}/files", {"file_id": f, "attributes": {"k" * 65: 1}}, "attributes"),
        (f"/v1/vector_stores/{vs}/files", {"file_id": f, "attributes": {"k": "v" * 513}}, "attributes"),
        (f"/v1/vector_stores/{vs}/files", {"file_id": f, "attributes": {"k": {"nested": 1}}}, "attributes.k"),
        (f"/v1/vector_stores/{vs}/files", {}, "file_id"),
        (f"/v1/vector_stores/{vs}/file_batches", {"file_ids": [f], "files": [{"file_id": f}]}, "files"),
        (f"/v1/vector_stores/{vs}/file_batches", {}, "file_ids"),
        (f"/v1/vector_stores/{vs}/file_batches", {"file_ids": []}, "file_ids"),
        (f"/v1/vector_stores/{vs}/file_batches", {"files": [{"file_id": "file-nope"}]}, "files[0].file_id"),
        (f"/v1/vector_stores/{vs}/file_batches",
         {"files": [{"file_id": f, "chunking_strategy": {"type": "static", "static": {
             "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 51}}}]},
         "files[0].chunking_strategy.static.chunk_overlap_tokens"),
        (f"/v1/vector_stores/{vs}/search", {"query": "x", "max_num_results": 51}, "max_num_results"),
        (f"/v1/vector_stores/{vs}/search", {"query": "x", "max_num_results": 0}, "max_num_results"),
        (f"/v1/vector_stores/{vs}/search", {}, "query"),
        (f"/v1/vector_stores/{vs}/search", {"query": "x", "ranking_options": {"score_threshold": 2}},
         "ranking_options.score_threshold"),
        (f"/v1/vector_stores/{vs}/search", {"query": "x", "filters": {"type": "xor", "filters": []}}, "filters.type"),
    ]
    for path, body, param in cases:
        response = http.post(path, json=body)
        assert response.status_code == 400, (body, response.text)
        assert _error(response)["param"] == param, (body, response.json())
    assert client.vector_stores.retrieve(vs).file_counts.total == 0
    response = http.get(f"/v1/vector_stores/{vs}/files", params={"filter": "done"})
    assert response.status_code == 400 and _error(response)["param"] == "filter"
    for path in ("/v1/vector_stores/vs_nope", f"/v1/vector_stores/{vs}/files/{f}",
                 f"/v1/vector_stores/{vs}/file_batches/vsfb_nope"):
        assert http.get(path).status_code == 404


def test_other_tenant_sees_nothing(spawn):
    from tests.conftest import make_client

    server = spawn("vs-keys", ASSISTANTD_API_KEYS="key-a,key-b")
    a, b = make_client(server.base_url, api_key="key-a"), make_client(server.base_url, api_key="key-b")
    store = a.vector_stores.create(name="mine")
    with pytest.raises(openai.NotFoundError):
        b.vector_stores.retrieve(store.id)
    assert store.id not in {s.id for s in b.vector_stores.list()}
    with pytest.raises(openai.BadRequestError):
        b.beta.assistants.create(model="gpt-4o", tools=[{"type": "file_search"}],
                                 tool_resources={"file_search": {"vector_store_ids": [store.id]}})


# --- tool_resources wiring ---------------------------------------------------------------------

def test_tool_resources_vector_store_ids_checked(client, http):
    store = client.vector_stores.create(name="kb")
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    assert assistant.tool_resources.file_search.vector_store_ids == [store.id]
    thread = client.beta.threads.create(tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    assert thread.tool_resources.file_search.vector_store_ids == [store.id]
    for path in ("/v1/assistants", "/v1/threads"):
        body = {"tool_resources": {"file_search": {"vector_store_ids": ["vs_unknown"]}}}
        if path == "/v1/assistants":
            body["model"] = "gpt-4o"
        response = http.post(path, json=body)
        assert response.status_code == 400
        assert _error(response)["param"] == "tool_resources.file_search.vector_store_ids[0]"
    response = http.post(f"/v1/assistants/{assistant.id}",
                         json={"tool_resources": {"file_search": {"vector_store_ids": ["vs_unknown"]}}})
    assert response.status_code == 400


def test_tool_resources_vector_stores_helper_creates_a_store(client, http):
    f = client.files.create(file=("kb.txt", b"The office closes at six."), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{
            "file_ids": [f.id], "metadata": {"made": "helper"},
            "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 100}}}]}})
    (vs_id,) = assistant.tool_resources.file_search.vector_store_ids
    store = _wait_store(client, vs_id)
    assert store.metadata == {"made": "helper"} and store.file_counts.completed == 1
    vs_file = client.vector_stores.files.retrieve(f.id, vector_store_id=vs_id)
    assert vs_file.chunking_strategy.static.max_chunk_size_tokens == 300

    thread = client.beta.threads.create(tool_resources={"file_search": {"vector_stores": [{"file_ids": [f.id]}]}})
    (thread_vs,) = thread.tool_resources.file_search.vector_store_ids
    assert thread_vs != vs_id and _wait_store(client, thread_vs).file_counts.completed == 1

    bad = http.post("/v1/threads", json={"tool_resources": {"file_search": {"vector_stores": [{"file_ids": ["file-nope"]}]}}})
    assert bad.status_code == 400
    assert _error(bad)["param"] == "tool_resources.file_search.vector_stores[0].file_ids[0]"


def test_ingestion_resumes_after_a_crash(spawn):
    """Files queued when the server is killed are ingested after it starts again."""
    from tests.conftest import make_client

    server = spawn("vs-crash")
    client = make_client(server.base_url)
    store = client.vector_stores.create()
    ids = [client.files.create(file=(f"c{i}.txt", f"crash test {i} ".encode() * 300),
                               purpose="assistants").id for i in range(20)]
    client.vector_stores.file_batches.create(store.id, file_ids=ids)
    server.kill()
    server.start()
    client = make_client(server.base_url)
    store = _wait_store(client, store.id, timeout=60)
    assert store.file_counts.completed == 20 and store.status == "completed"


def test_deleting_the_file_removes_it_from_stores(client):
    store = client.vector_stores.create()
    vs_file = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("gone.txt", b"ephemeral platypus facts"), poll_interval_ms=100)
    assert client.vector_stores.search(store.id, query="platypus").data
    client.files.delete(vs_file.id)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(vs_file.id, vector_store_id=store.id)
    assert client.vector_stores.search(store.id, query="platypus").data == []
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0


def test_store_past_its_expiry_is_expired(spawn, backend):
    """``expires_at`` = last activity + days; a store past it shows ``status: expired``."""
    if backend != "sqlite":
        pytest.skip("moves expires_at in the SQLite file directly")
    import sqlite3

    from tests.conftest import make_client

    server = spawn("vs-expiry")
    client = make_client(server.base_url)
    store = client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 1})
    assert store.status == "completed"
    with sqlite3.connect(server.data_dir / "assistantd.db") as db:
        db.execute("UPDATE vector_stores SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, store.id))
    assert client.vector_stores.retrieve(store.id).status == "expired"
    # An expired store cannot be searched, and using it does not bring it back.
    with pytest.raises(openai.BadRequestError) as refused:
        client.vector_stores.search(store.id, query="anything")
    assert refused.value.body["code"] == "vector_store_expired"
    assert client.vector_stores.retrieve(store.id).status == "expired"
    # A run whose file_search would read it fails, saying why.
    bot = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "file_search"}],
                                        tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "search the files"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=bot.id, poll_interval_ms=50)
    assert run.status == "failed" and "has expired" in run.last_error.message
