"""``/v1/files``: upload, list, retrieve, raw content, delete, and the upload size limit."""

from __future__ import annotations

import os
import time

import httpx
import openai
import pytest

from tests.conftest import make_client, make_http

PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
HOUR = 3600
THIRTY_DAYS = 2_592_000


def _blob(n: int = 4096) -> bytes:
    """``n`` random bytes that certainly contain NULs and bytes that are not valid UTF-8."""
    data = bytearray(os.urandom(n))
    for i, b in ((0, 0), (n // 2, 0xFF), (n // 2 + 1, 0), (n - 1, 0)):
        data[i] = b
    return bytes(data)


def _stored(server) -> list[str]:
    """Every entry of the server's file store (bytes and any partial uploads)."""
    root = server.data_dir / "files"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# --- upload ------------------------------------------------------------------------------------

@pytest.mark.parametrize("purpose", PURPOSES)
def test_upload_each_purpose_with_expiry(server, client, purpose):
    if purpose == "evals":
        # Spec erratum: CreateFileRequest accepts ``evals`` but the OpenAIFile schema's purpose
        # enum (and the SDK's FileObject literal) omit it, so the validating client would refuse
        # the (correct) echo of the purpose. Check this one without the spec hook.
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    data = _blob(777)
    before = int(time.time())
    created = client.files.create(file=(f"{purpose}.bin", data), purpose=purpose,
                                  expires_after={"anchor": "created_at", "seconds": HOUR})
    after = int(time.time())
    try:
        assert created.id.startswith("file-")
        assert created.object == "file"
        assert created.purpose == purpose
        assert created.filename == f"{purpose}.bin"
        assert created.bytes == len(data)
        assert before <= created.created_at <= after
        assert created.expires_at == created.created_at + HOUR
        assert created.status == "processed"

        retrieved = client.files.retrieve(created.id)
        assert retrieved.model_dump() == created.model_dump()
        assert client.files.content(created.id).content == data
        assert created.id in {f.id for f in client.files.list(purpose=purpose)}
    finally:
        if purpose == "evals":
            # Keep the shared server's file list valid for the validating clients of other tests.
            client.files.delete(created.id)
            client.close()


def test_upload_without_expiry_never_expires(client, http):
    created = client.files.create(file=("plain.txt", b"hello"), purpose="assistants")
    assert created.expires_at is None
    raw = http.get(f"/v1/files/{created.id}").json()
    # The spec types expires_at as an integer (not nullable): absent when the file never expires.
    assert "expires_at" not in raw
    assert raw["bytes"] == 5 and raw["filename"] == "plain.txt"


@pytest.mark.parametrize("seconds", [HOUR, THIRTY_DAYS])
def test_expiry_bounds_are_inclusive(client, seconds):
    created = client.files.create(file=("edge.txt", b"x"), purpose="assistants",
                                  expires_after={"anchor": "created_at", "seconds": seconds})
    assert created.expires_at == created.created_at + seconds


@pytest.mark.parametrize("seconds", [HOUR - 1, THIRTY_DAYS + 1, 0, -5])
def test_expiry_out_of_range_is_rejected(server, client, seconds):
    ids_before = {f.id for f in client.files.list()}
    stored_before = _stored(server)
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("bad.txt", b"nope"), purpose="assistants",
                            expires_after={"anchor": "created_at", "seconds": seconds})
    assert exc.value.status_code == 400
    assert exc.value.param == "expires_after.seconds"
    assert str(seconds) in exc.value.message
    assert {f.id for f in client.files.list()} == ids_before
    assert _stored(server) == stored_before


def test_expiry_with_wrong_anchor_is_rejected(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("bad.txt", b"nope"), purpose="assistants",
                            expires_after={"anchor": "last_active_at", "seconds": HOUR})  # type: ignore[typeddict-item]
    assert exc.value.param == "expires_after.anchor"


def test_expiry_seconds_must_be_an_integer(http):
    r = http.post("/v1/files", files={"file": ("a.txt", b"a")},
                  data={"purpose": "assistants", "expires_after[anchor]": "created_at",
                        "expires_after[seconds]": "an hour"})
    assert r.status_code == 400
    assert _error(r)["param"] == "expires_after.seconds"


@pytest.mark.parametrize("purpose", ["assistants_output", "batch_output", "fine_tune", "ASSISTANTS", "nonsense"])
def test_bad_purpose_is_rejected(server, client, purpose):
    ids_before = {f.id for f in client.files.list()}
    stored_before = _stored(server)
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("a.txt", b"abc"), purpose=purpose)  # type: ignore[arg-type]
    assert exc.value.status_code == 400
    assert exc.value.param == "purpose"
    assert exc.value.type == "invalid_request_error"
    assert {f.id for f in client.files.list()} == ids_before
    assert _stored(server) == stored_before


def test_missing_purpose_or_file(http):
    r = http.post("/v1/files", files={"file": ("a.txt", b"a")})
    assert r.status_code == 400 and _error(r)["param"] == "purpose"

    r = http.post("/v1/files", files={"other": ("a.txt", b"a")}, data={"purpose": "assistants"})
    assert r.status_code == 400 and _error(r)["param"] == "file"

    # ``file`` sent as a plain form field, not a file part.
    r = http.post("/v1/files", files={"purpose": (None, "assistants"), "file": (None, "not a file")})
    assert r.status_code == 400 and _error(r)["param"] == "file"

    # Not multipart at all.
    for kwargs in ({"data": {"purpose": "assistants", "file": "abc"}},
                   {"json": {"purpose": "assistants", "file": "abc"}}):
        r = http.post("/v1/files", **kwargs)
        assert r.status_code == 400
        assert "multipart/form-data" in _error(r)["message"]


def test_two_files_in_one_upload_are_rejected(server, http):
    stored_before = _stored(server)
    listed_before = http.get("/v1/files").json()["data"]
    r = http.post("/v1/files", files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))],
                  data={"purpose": "assistants"})
    assert r.status_code == 400
    _error(r)
    assert http.get("/v1/files").json()["data"] == listed_before
    assert _stored(server) == stored_before


def test_upload_from_open_file_and_unicode_name(client, tmp_path, http):
    path = tmp_path / "notes.md"
    path.write_bytes(b"# Notes\n\nSolve 3x + 11 = 14.\n")
    with open(path, "rb") as fh:
        created = client.files.create(file=fh, purpose="assistants")
    assert created.filename == "notes.md"
    assert created.bytes == path.stat().st_size
    assert client.files.content(created.id).content == path.read_bytes()

    name = "résumé ünïcødé 📄.txt"
    created = client.files.create(file=(name, "héllo".encode()), purpose="assistants")
    assert created.filename == name
    assert client.files.retrieve(created.id).filename == name
    r = http.get(f"/v1/files/{created.id}/content")
    assert r.status_code == 200 and r.content == "héllo".encode()
    assert r.headers["content-disposition"].startswith("attachment")


def test_empty_file(client):
    created = client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert created.bytes == 0
    assert client.files.content(created.id).content == b""


# --- content -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "filename, declared, expected_type",
    [
        ("blob.bin", None, "application/octet-stream"),
        ("notes.txt", None, "text/plain"),
        ("table.csv", None, "text/csv"),
        ("image.png", None, "image/png"),
        ("photo.jpeg", None, "image/jpeg"),
        ("page.pdf", None, "application/pdf"),
        # No extension: the type the client declared for the part is kept.
        ("picture", "image/png", "image/png"),
        ("mystery", None, "application/octet-stream"),
    ],
)
def test_content_is_exact_bytes_with_content_type(server, client, filename, declared, expected_type):
    data = _blob(3000)
    upload = (filename, data, declared) if declared else (filename, data)
    created = client.files.create(file=upload, purpose="assistants")
    assert created.bytes == len(data)

    content = client.files.content(created.id)
    assert content.content == data
    assert content.response.headers["content-type"].split(";")[0].strip() == expected_type
    assert int(content.response.headers["content-length"]) == len(data)
    disposition = content.response.headers["content-disposition"]
    assert disposition.startswith("attachment") and filename in disposition
    # The bytes on disk are the bytes uploaded, under the file's id.
    assert (server.data_dir / "files" / created.id).read_bytes() == data


def test_json_content_type(server, client):
    document = b'{"question": "3x + 11 = 14", "answer": 1, "tags": ["algebra"]}\n'
    created = client.files.create(file=("qa.json", document), purpose="assistants")
    # The spec describes GET /files/{id}/content as ``application/json`` with a ``string`` schema
    # (it is raw bytes); the harness's response validator would apply that schema to the raw
    # document, so fetch it with a plain client.
    with httpx.Client(base_url=server.url, timeout=30) as raw:
        r = raw.get(f"/v1/files/{created.id}/content")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "application/json"
    assert r.content == document


def test_content_of_unknown_file_is_404(client, http):
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-doesnotexist")
    r = http.get("/v1/files/file-doesnotexist/content")
    assert r.status_code == 404
    assert _error(r)["type"] == "invalid_request_error"


# --- retrieve / delete -------------------------------------------------------------------------

def test_retrieve_unknown_file_is_404(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.files.retrieve("file-doesnotexist")
    assert exc.value.status_code == 404
    assert "file-doesnotexist" in exc.value.message


def test_delete_removes_row_and_bytes(server, client, http):
    data = _blob(2048)
    created = client.files.create(file=("gone.bin", data), purpose="assistants")
    on_disk = server.data_dir / "files" / created.id
    assert on_disk.read_bytes() == data

    r = http.delete(f"/v1/files/{created.id}")
    assert r.status_code == 200
    assert r.json() == {"id": created.id, "object": "file", "deleted": True}

    assert not on_disk.exists()
    assert not any(name.startswith(created.id) for name in _stored(server))
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)
    assert created.id not in {f.id for f in client.files.list()}


def test_delete_via_sdk(client):
    created = client.files.create(file=("sdk.txt", b"bye"), purpose="user_data")
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)


def test_deleted_file_can_no_longer_be_referenced(client):
    created = client.files.create(file=("ref.txt", b"ref"), purpose="assistants")
    client.files.delete(created.id)
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.create(
            tool_resources={"code_interpreter": {"file_ids": [created.id]}})
    assert exc.value.param == "tool_resources.code_interpreter.file_ids[0]"


# --- list --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listing(spawn):
    """A server of its own holding exactly 25 files: 15 ``assistants`` and 10 ``user_data``."""
    server = spawn("files-list")
    client = make_client(server.base_url)
    ids, by_purpose = [], {"assistants": [], "user_data": []}
    for i in range(25):
        purpose = "user_data" if i % 5 in (1, 3) else "assistants"
        f = client.files.create(file=(f"f{i:02}.txt", f"file {i}".encode()), purpose=purpose)
        ids.append(f.id)
        by_purpose[purpose].append(f.id)
    client.close()
    assert len(by_purpose["user_data"]) == 10
    return server, ids, by_purpose


@pytest.fixture
def list_client(listing):
    c = make_client(listing[0].base_url)
    yield c
    c.close()


@pytest.fixture
def list_http(listing):
    with make_http(listing[0].url) as h:
        yield h


def test_list_default_limit_returns_everything(listing, list_http, list_client):
    _, ids, _ = listing
    body = list_http.get("/v1/files").json()
    assert body["object"] == "list"
    assert [f["id"] for f in body["data"]] == ids[::-1]  # newest first by default
    assert body["has_more"] is False
    assert body["first_id"] == ids[-1] and body["last_id"] == ids[0]

    page = list_client.files.list()
    assert [f.id for f in page.data] == ids[::-1]
    assert page.has_more is False


def test_list_order_asc(listing, list_client):
    _, ids, _ = listing
    assert [f.id for f in list_client.files.list(order="asc")] == ids


def test_list_purpose_filter(listing, list_client, list_http):
    _, _, by_purpose = listing
    for purpose, expected in by_purpose.items():
        page = list_client.files.list(purpose=purpose, order="asc")
        assert [f.id for f in page.data] == expected
        assert all(f.purpose == purpose for f in page.data)
        assert page.has_more is False
    empty = list_http.get("/v1/files", params={"purpose": "batch"}).json()
    assert empty["data"] == [] and empty["has_more"] is False
    assert empty["first_id"] is None and empty["last_id"] is None


def test_list_after_cursor(listing, list_http, list_client):
    _, ids, by_purpose = listing
    seen = []
    after = None
    while True:
        params = {"limit": 10, "order": "asc", **({"after": after} if after else {})}
        body = list_http.get("/v1/files", params=params).json()
        seen.extend(f["id"] for f in body["data"])
        assert body["has_more"] is (len(seen) < len(ids))
        if not body["has_more"]:
            break
        assert len(body["data"]) == 10
        after = body["last_id"]
    assert seen == ids

    # desc from a cursor: the ones older than it.
    body = list_http.get("/v1/files", params={"after": ids[10]}).json()
    assert [f["id"] for f in body["data"]] == ids[:10][::-1]

    # after + purpose filter.
    ud = by_purpose["user_data"]
    body = list_http.get("/v1/files", params={"purpose": "user_data", "order": "asc",
                                              "after": ud[3], "limit": 4}).json()
    assert [f["id"] for f in body["data"]] == ud[4:8] and body["has_more"] is True

    # The SDK's auto-pagination follows the cursor to the end.
    assert [f.id for f in list_client.files.list(limit=7, order="asc")] == ids
    assert [f.id for f in list_client.files.list(limit=3)] == ids[::-1]


def test_list_after_unknown_cursor_is_rejected(list_http):
    r = list_http.get("/v1/files", params={"after": "file-doesnotexist"})
    assert r.status_code == 400
    assert _error(r)["param"] == "after"


def test_list_has_no_before(listing, list_http):
    # OpenAI's GET /files has no ``before`` parameter; like any unknown query parameter it is
    # ignored rather than half-honoured.
    _, ids, _ = listing
    body = list_http.get("/v1/files", params={"before": ids[5], "limit": 3, "order": "asc"}).json()
    assert [f["id"] for f in body["data"]] == ids[:3]
    assert body["has_more"] is True


@pytest.mark.parametrize("limit, ok", [(0, False), (1, True), (10000, True), (10001, False)])
def test_list_limit_bounds(listing, list_http, limit, ok):
    _, ids, _ = listing
    r = list_http.get("/v1/files", params={"limit": limit})
    if ok:
        assert r.status_code == 200
        assert len(r.json()["data"]) == min(limit, len(ids))
    else:
        assert r.status_code == 400
        assert _error(r)["param"] == "limit"


def test_list_bad_order(list_http):
    r = list_http.get("/v1/files", params={"order": "sideways"})
    assert r.status_code == 400
    assert _error(r)["param"] == "order"


# --- upload size limit ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(spawn):
    return spawn("files-small", ASSISTANTD_MAX_UPLOAD_BYTES="1000")


@pytest.mark.parametrize("size", [1001, 5000, 200_000])
def test_upload_over_limit_is_413_and_stores_nothing(small, size):
    # 1001 and 5000 are caught while streaming the bytes in; 200000 by its Content-Length.
    with make_http(small.url) as http:
        r = http.post("/v1/files", files={"file": ("big.bin", _blob(size))},
                      data={"purpose": "assistants"})
        assert r.status_code == 413
        err = _error(r)
        assert err["type"] == "invalid_request_error"
        assert err["param"] == "file"
        assert "1000" in err["message"]
        listed = http.get("/v1/files").json()
        assert listed["data"] == []
    assert _stored(small) == []


def test_chunked_upload_over_limit_is_413(small):
    # No Content-Length: the limit is enforced on the bytes as they are stored.
    boundary = "assistantd-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        for _ in range(5):
            yield _blob(1000)
        yield tail

    with make_http(small.url) as http:
        r = http.post("/v1/files", content=body(),
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert r.status_code == 413
        assert _error(r)["code"] == "file_too_large"
        assert http.get("/v1/files").json()["data"] == []
    assert _stored(small) == []


def test_upload_over_limit_via_sdk(small):
    with make_client(small.base_url) as client:
        with pytest.raises(openai.APIStatusError) as exc:
            client.files.create(file=("big.bin", _blob(5000)), purpose="assistants")
        assert exc.value.status_code == 413
        assert exc.value.code == "file_too_large"
        assert list(client.files.list()) == []
    assert _stored(small) == []


def test_upload_at_limit_is_accepted(small):
    data = _blob(1000)
    assert len(data) == 1000
    with make_client(small.base_url) as client:
        created = client.files.create(file=("fits.bin", data), purpose="assistants")
        assert created.bytes == 1000
        assert client.files.content(created.id).content == data
        client.files.delete(created.id)
    assert _stored(small) == []


# --- expiry ------------------------------------------------------------------------------------

def _backdate(server, file_id: str, expires_at: int) -> None:
    """Move a file's ``expires_at`` into the past (the clock cannot be wound an hour forward)."""
    url = server.env.get("ASSISTANTD_DATABASE_URL")
    if url is None:
        import sqlite3

        with sqlite3.connect(server.data_dir / "assistantd.db", timeout=30) as db:
            db.execute("UPDATE files SET expires_at = ? WHERE id = ?", (expires_at, file_id))
        return
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE files SET expires_at = $1 WHERE id = $2", expires_at, file_id)
        finally:
            await conn.close()

    asyncio.run(run())


def test_expired_file_disappears_and_its_bytes_are_swept(spawn):
    server = spawn("files-expiry")
    with make_client(server.base_url) as client:
        doomed = client.files.create(file=("doomed.bin", _blob(100)), purpose="assistants",
                                     expires_after={"anchor": "created_at", "seconds": HOUR})
        kept = client.files.create(file=("kept.bin", _blob(100)), purpose="assistants",
                                   expires_after={"anchor": "created_at", "seconds": HOUR})
        forever = client.files.create(file=("forever.bin", b"forever"), purpose="assistants")
        _backdate(server, doomed.id, int(time.time()) - 1)

        # Gone from the API at once, before any sweep.
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(doomed.id)
        with pytest.raises(openai.NotFoundError):
            client.files.content(doomed.id)
        with pytest.raises(openai.NotFoundError):
            client.files.delete(doomed.id)
        assert [f.id for f in client.files.list()] == [forever.id, kept.id]
        with pytest.raises(openai.BadRequestError):
            client.beta.assistants.create(
                model="gpt-4o", tool_resources={"code_interpreter": {"file_ids": [doomed.id]}})

    # The sweep runs at start (and every minute after): the bytes go too.
    server.restart()
    deadline = time.monotonic() + 10
    while (server.data_dir / "files" / doomed.id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stored(server) == sorted([kept.id, forever.id])
    with make_client(server.base_url) as client:
        assert [f.id for f in client.files.list()] == [forever.id, kept.id]
        assert client.files.content(forever.id).content == b"forever"


def test_content_whose_bytes_vanished_is_404(server, client):
    # E.g. the expiry sweep removed them between the row lookup and the read.
    created = client.files.create(file=("vanishing.bin", b"soon gone"), purpose="assistants")
    (server.data_dir / "files" / created.id).unlink()
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    client.files.delete(created.id)
