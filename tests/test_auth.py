"""Bearer keys and tenants (ASSISTANTD_API_KEYS), open mode, /healthz, and the OpenAI-Beta header."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import make_client, make_http

KEY_A, KEY_B = "key-a", "key-b"
OPEN_MODE_WARNING = "ASSISTANTD_API_KEYS is not set: open mode"


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def keyed(spawn):
    return spawn("auth", ASSISTANTD_API_KEYS=f"{KEY_A},{KEY_B}")


@pytest.fixture(scope="module")
def a(keyed):
    with make_client(keyed.base_url, api_key=KEY_A) as c:
        yield c


@pytest.fixture(scope="module")
def b(keyed):
    with make_client(keyed.base_url, api_key=KEY_B) as c:
        yield c


@pytest.fixture(scope="module")
def owned(a):
    """Objects made with key-a: an assistant, a thread with a message, a second message, a file."""
    file = a.files.create(file=("secret.txt", b"key-a's secret"), purpose="assistants")
    assistant = a.beta.assistants.create(
        model="gpt-4o", name="A's assistant", metadata={"owner": "a"},
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [file.id]}})
    thread = a.beta.threads.create(messages=[{"role": "user", "content": "first"}],
                                   metadata={"owner": "a"})
    message = a.beta.threads.messages.create(
        thread.id, role="user", content="second",
        attachments=[{"file_id": file.id, "tools": [{"type": "code_interpreter"}]}])
    return {"assistant": assistant, "thread": thread, "message": message, "file": file}


# --- keys --------------------------------------------------------------------------------------

REQUESTS = [
    ("GET", "/v1/assistants", {}),
    ("POST", "/v1/assistants", {"json": {"model": "gpt-4o"}}),
    ("POST", "/v1/threads", {"json": {}}),
    ("GET", "/v1/threads/thread_x/messages", {}),
    ("GET", "/v1/files", {}),
    ("POST", "/v1/files", {"files": {"file": ("a.txt", b"a")}, "data": {"purpose": "assistants"}}),
    ("GET", "/v1/files/file-x/content", {}),
]


@pytest.mark.parametrize("method, path, kwargs", REQUESTS)
def test_request_without_key_is_401(keyed, method, path, kwargs):
    with make_http(keyed.url) as http:
        err = _error(http.request(method, path, **kwargs), 401)
    assert err["type"] == "invalid_request_error"
    assert "API key" in err["message"]


@pytest.mark.parametrize("header", ["Bearer key-c", "Bearer key-a2", "Bearer KEY-A", "Bearer key-",
                                    "Basic key-a", "key-a", "Bearer", "Bearer key-a,key-b"])
def test_unknown_or_malformed_key_is_401(keyed, header):
    with make_http(keyed.url, headers={"Authorization": header}) as http:
        _error(http.get("/v1/assistants"), 401)
        _error(http.post("/v1/assistants", json={"model": "gpt-4o"}), 401)


def test_unknown_key_via_sdk(keyed, a):
    before = [x.id for x in a.beta.assistants.list()]
    with make_client(keyed.base_url, api_key="sk-wrong") as wrong:
        with pytest.raises(openai.AuthenticationError) as exc:
            wrong.beta.assistants.create(model="gpt-4o", name="intruder")
        assert exc.value.status_code == 401
        assert exc.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            wrong.files.list()
    # The rejected request wrote nothing anywhere.
    assert [x.id for x in a.beta.assistants.list()] == before


def test_listed_keys_are_accepted(keyed):
    for key in (KEY_A, KEY_B):
        with make_http(keyed.url, headers={"Authorization": f"Bearer {key}"}) as http:
            assert http.get("/v1/assistants").status_code == 200
        with make_http(keyed.url, headers={"Authorization": f"bearer  {key}"}) as http:
            assert http.get("/v1/files").status_code == 200


def test_keyed_server_does_not_warn_about_open_mode(keyed):
    log = keyed.log_path.read_text(errors="replace")
    assert "Application startup complete" in log
    assert OPEN_MODE_WARNING not in log


def test_healthz_needs_no_key(keyed, server):
    for s in (keyed, server):
        r = httpx.get(f"{s.url}/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}


# --- tenants -----------------------------------------------------------------------------------

def test_other_tenant_gets_404_for_assistant(a, b, owned):
    aid = owned["assistant"].id
    with pytest.raises(openai.NotFoundError):
        b.beta.assistants.retrieve(aid)
    with pytest.raises(openai.NotFoundError):
        b.beta.assistants.update(aid, name="hijacked", metadata={"owner": "b"})
    with pytest.raises(openai.NotFoundError):
        b.beta.assistants.delete(aid)
    assert aid not in {x.id for x in b.beta.assistants.list()}
    assert a.beta.assistants.retrieve(aid).model_dump() == owned["assistant"].model_dump()


def test_other_tenant_gets_404_for_thread_and_messages(a, b, owned):
    tid, mid = owned["thread"].id, owned["message"].id
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.retrieve(tid)
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.update(tid, metadata={"owner": "b"})
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.messages.list(tid)
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.messages.create(tid, role="user", content="injected")
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.messages.retrieve(mid, thread_id=tid)
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.messages.update(mid, thread_id=tid, metadata={"owner": "b"})
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.messages.delete(mid, thread_id=tid)
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.delete(tid)

    assert a.beta.threads.retrieve(tid).model_dump() == owned["thread"].model_dump()
    texts = [m.content[0].text.value for m in a.beta.threads.messages.list(tid, order="asc")]
    assert texts == ["first", "second"]
    assert a.beta.threads.messages.retrieve(mid, thread_id=tid).model_dump() == owned["message"].model_dump()


def test_other_tenant_gets_404_for_file(a, b, keyed, owned):
    fid = owned["file"].id
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(fid)
    with pytest.raises(openai.NotFoundError):
        b.files.content(fid)
    with pytest.raises(openai.NotFoundError):
        b.files.delete(fid)
    assert fid not in {f.id for f in b.files.list()}
    with make_http(keyed.url, headers={"Authorization": f"Bearer {KEY_B}"}) as http:
        _error(http.get(f"/v1/files/{fid}/content"), 404)

    assert a.files.retrieve(fid).model_dump() == owned["file"].model_dump()
    assert a.files.content(fid).content == b"key-a's secret"
    assert (keyed.data_dir / "files" / fid).exists()


def test_other_tenant_cannot_reference_file(b, owned):
    fid = owned["file"].id
    with pytest.raises(openai.BadRequestError) as exc:
        b.beta.assistants.create(model="gpt-4o",
                                 tool_resources={"code_interpreter": {"file_ids": [fid]}})
    assert exc.value.param == "tool_resources.code_interpreter.file_ids[0]"
    with pytest.raises(openai.BadRequestError) as exc:
        b.beta.threads.create(messages=[{
            "role": "user", "content": "use it",
            "attachments": [{"file_id": fid, "tools": [{"type": "code_interpreter"}]}]}])
    assert exc.value.param == "messages[0].attachments[0].file_id"
    with pytest.raises(openai.BadRequestError):
        b.beta.threads.create(messages=[{
            "role": "user", "content": [{"type": "image_file", "image_file": {"file_id": fid}}]}])


def test_tenants_lists_are_disjoint(a, b, owned):
    mine = b.beta.assistants.create(model="gpt-4o", name="B's assistant")
    my_file = b.files.create(file=("b.txt", b"b"), purpose="user_data")
    my_thread = b.beta.threads.create(messages=[{"role": "user", "content": "b"}])
    try:
        assert [x.id for x in b.beta.assistants.list()] == [mine.id]
        assert [f.id for f in b.files.list()] == [my_file.id]
        a_assistants = {x.id for x in a.beta.assistants.list()}
        assert owned["assistant"].id in a_assistants and mine.id not in a_assistants
        a_files = {f.id for f in a.files.list()}
        assert owned["file"].id in a_files and my_file.id not in a_files
        with pytest.raises(openai.NotFoundError):
            a.beta.threads.retrieve(my_thread.id)
        with pytest.raises(openai.NotFoundError):
            a.files.content(my_file.id)
        with pytest.raises(openai.NotFoundError):
            a.beta.assistants.retrieve(mine.id)
    finally:
        b.beta.assistants.delete(mine.id)
        b.files.delete(my_file.id)
        b.beta.threads.delete(my_thread.id)


def test_tenants_survive_a_restart(a, b, keyed, owned):
    # A key maps to the same tenant in every process: nothing is tied to one server's lifetime.
    keyed.restart()
    assert a.beta.assistants.retrieve(owned["assistant"].id).name == "A's assistant"
    assert a.files.content(owned["file"].id).content == b"key-a's secret"
    assert [m.id for m in a.beta.threads.messages.list(owned["thread"].id)][0] == owned["message"].id
    with pytest.raises(openai.NotFoundError):
        b.beta.assistants.retrieve(owned["assistant"].id)
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(owned["file"].id)
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.retrieve(owned["thread"].id)


def test_owner_can_still_delete(a, owned, keyed):
    # Runs last in this module: the failed cross-tenant deletes left everything in place.
    fid = owned["file"].id
    assert a.files.delete(fid).deleted is True
    assert not (keyed.data_dir / "files" / fid).exists()
    assert a.beta.threads.delete(owned["thread"].id).deleted is True
    assert a.beta.assistants.delete(owned["assistant"].id).deleted is True
    assert list(a.beta.assistants.list()) == []


# --- open mode ---------------------------------------------------------------------------------

def test_open_mode_accepts_any_key_and_shares_one_tenant(server):
    with make_client(server.base_url, api_key="anything-1") as one, \
            make_client(server.base_url, api_key="something-else") as two:
        assistant = one.beta.assistants.create(model="gpt-4o", name="shared")
        file = one.files.create(file=("shared.txt", b"shared"), purpose="assistants")
        assert two.beta.assistants.retrieve(assistant.id).name == "shared"
        assert two.files.content(file.id).content == b"shared"
        assert assistant.id in {x.id for x in two.beta.assistants.list(limit=100)}

    with make_http(server.url) as http:  # no Authorization header at all
        assert "authorization" not in {k.lower() for k in http.headers}
        r = http.get(f"/v1/assistants/{assistant.id}")
        assert r.status_code == 200 and r.json()["name"] == "shared"
        r = http.post("/v1/threads", json={})
        assert r.status_code == 200 and r.json()["object"] == "thread"
        r = http.get(f"/v1/files/{file.id}/content")
        assert r.status_code == 200 and r.content == b"shared"
    with make_http(server.url, headers={"Authorization": "Basic Zm9vOmJhcg=="}) as http:
        assert http.get(f"/v1/files/{file.id}").status_code == 200


def test_open_mode_logs_a_warning(server):
    # Read the whole log: the warning is written once, at start.
    assert OPEN_MODE_WARNING in server.log_path.read_text(errors="replace")


# --- OpenAI-Beta -------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/v1/assistants", {}),
    ("POST", "/v1/assistants", {"json": {"model": "gpt-4o"}}),
    ("POST", "/v1/threads", {"json": {}}),
])
def test_beta_v1_is_refused(server, method, path, kwargs):
    with make_http(server.url, headers={"OpenAI-Beta": "assistants=v1"}) as http:
        before = http.get("/v1/assistants", headers={"OpenAI-Beta": "assistants=v2"}).json()["data"]
        err = _error(http.request(method, path, **kwargs), 400)
        assert err["code"] == "invalid_beta"
        assert err["type"] == "invalid_request_error"
        after = http.get("/v1/assistants", headers={"OpenAI-Beta": "assistants=v2"}).json()["data"]
    assert after == before


def test_beta_v1_is_refused_on_keyed_server(keyed):
    headers = {"OpenAI-Beta": "assistants=v1", "Authorization": f"Bearer {KEY_A}"}
    with make_http(keyed.url, headers=headers) as http:
        assert _error(http.get("/v1/assistants"), 400)["code"] == "invalid_beta"


def test_beta_v1_via_sdk(server):
    with make_client(server.base_url) as client:
        with pytest.raises(openai.BadRequestError) as exc:
            client.beta.assistants.list(extra_headers={"OpenAI-Beta": "assistants=v1"})
        assert exc.value.code == "invalid_beta"


@pytest.mark.parametrize("headers", [{}, {"OpenAI-Beta": "assistants=v2"}])
def test_beta_v2_or_no_header_is_accepted(http, headers):
    r = http.post("/v1/assistants", json={"model": "gpt-4o", "name": "beta"}, headers=headers)
    assert r.status_code == 200 and r.json()["object"] == "assistant"
