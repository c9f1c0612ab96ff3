"""Request validation: OpenAI's 400 error envelope with the right ``param``, never FastAPI's 422,
and a rejected request writes nothing."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import make_http
from tests.test_threads_messages import count_rows


def fn(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def many(n: int, value="v") -> dict:
    return {f"key{i}": value for i in range(n)}


# (id, method, path, body, expected param). {a}, {t}, {m} stand for a live assistant, thread, message.
ASSISTANT_CASES = [
    ("name-too-long", {"model": "gpt-4o", "name": "n" * 257}, "name"),
    ("description-too-long", {"model": "gpt-4o", "description": "d" * 513}, "description"),
    ("instructions-too-long", {"model": "gpt-4o", "instructions": "i" * 256_001}, "instructions"),
    ("too-many-tools", {"model": "gpt-4o", "tools": [fn(f"f{i}") for i in range(129)]}, "tools"),
    ("too-many-code-files", {"model": "gpt-4o", "tool_resources": {
        "code_interpreter": {"file_ids": [f"file-{i}" for i in range(21)]}}},
     "tool_resources.code_interpreter.file_ids"),
    ("too-many-vector-stores", {"model": "gpt-4o", "tool_resources": {
        "file_search": {"vector_store_ids": ["vs_a", "vs_b"]}}},
     "tool_resources.file_search.vector_store_ids"),
    ("temperature-above", {"model": "gpt-4o", "temperature": 2.01}, "temperature"),
    ("temperature-below", {"model": "gpt-4o", "temperature": -0.01}, "temperature"),
    ("temperature-not-number", {"model": "gpt-4o", "temperature": "hot"}, "temperature"),
    ("top-p-above", {"model": "gpt-4o", "top_p": 1.01}, "top_p"),
    ("top-p-below", {"model": "gpt-4o", "top_p": -0.5}, "top_p"),
    ("metadata-too-many", {"model": "gpt-4o", "metadata": many(17)}, "metadata"),
    ("metadata-key-too-long", {"model": "gpt-4o", "metadata": {"k" * 65: "v"}}, "metadata"),
    ("metadata-value-too-long", {"model": "gpt-4o", "metadata": {"k": "v" * 513}}, "metadata"),
    ("metadata-not-object", {"model": "gpt-4o", "metadata": "x"}, "metadata"),
    ("unknown-field", {"model": "gpt-4o", "colour": "blue"}, "colour"),
    ("missing-model", {"name": "no model"}, "model"),
    ("model-not-string", {"model": 4}, "model"),
    ("bad-tool-type", {"model": "gpt-4o", "tools": [{"type": "code_interpreter"}, {"type": "web_browser"}]},
     "tools[1].type"),
    ("tool-without-type", {"model": "gpt-4o", "tools": [{"function": {"name": "f"}}]}, "tools[0].type"),
    ("tools-not-list", {"model": "gpt-4o", "tools": "code_interpreter"}, "tools"),
    ("function-named-code-interpreter", {"model": "gpt-4o", "tools": [fn("code_interpreter")]},
     "tools[0].function.name"),
    ("function-named-file-search", {"model": "gpt-4o", "tools": [{"type": "code_interpreter"}, fn("file_search")]},
     "tools[1].function.name"),
    ("function-bad-name", {"model": "gpt-4o", "tools": [fn("has space")]}, "tools[0].function.name"),
    ("function-name-too-long", {"model": "gpt-4o", "tools": [fn("f" * 65)]}, "tools[0].function.name"),
    ("function-missing-name", {"model": "gpt-4o", "tools": [{"type": "function", "function": {}}]},
     "tools[0].function.name"),
    ("function-missing-definition", {"model": "gpt-4o", "tools": [{"type": "function"}]}, "tools[0].function"),
    ("file-search-max-results-above", {"model": "gpt-4o", "tools": [
        {"type": "file_search", "file_search": {"max_num_results": 51}}]},
     "tools[0].file_search.max_num_results"),
    ("file-search-max-results-below", {"model": "gpt-4o", "tools": [
        {"type": "file_search", "file_search": {"max_num_results": 0}}]},
     "tools[0].file_search.max_num_results"),
    ("response-format-bad-string", {"model": "gpt-4o", "response_format": "xml"}, "response_format"),
    ("response-format-bad-type", {"model": "gpt-4o", "response_format": {"type": "xml"}}, "response_format.type"),
    ("response-format-schema-missing", {"model": "gpt-4o", "response_format": {"type": "json_schema"}},
     "response_format.json_schema"),
    ("unknown-code-file", {"model": "gpt-4o", "tool_resources": {
        "code_interpreter": {"file_ids": ["file-doesnotexist"]}}},
     "tool_resources.code_interpreter.file_ids[0]"),
]

MODIFY_ASSISTANT_CASES = [
    ("name-too-long", {"name": "n" * 257}, "name"),
    ("temperature-above", {"temperature": 3}, "temperature"),
    ("top-p-below", {"top_p": -1}, "top_p"),
    ("metadata-too-many", {"metadata": many(17)}, "metadata"),
    ("unknown-field", {"file_ids": []}, "file_ids"),
    ("bad-tool-type", {"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ("function-named-file-search", {"tools": [fn("file_search")]}, "tools[0].function.name"),
    ("too-many-tools", {"tools": [fn(f"f{i}") for i in range(129)]}, "tools"),
]

THREAD_CASES = [
    ("metadata-too-many", {"metadata": many(17)}, "metadata"),
    ("metadata-key-too-long", {"metadata": {"k" * 65: "v"}}, "metadata"),
    ("metadata-value-too-long", {"metadata": {"k": "v" * 513}}, "metadata"),
    ("unknown-field", {"assistant_id": "asst_x"}, "assistant_id"),
    ("messages-not-list", {"messages": {"role": "user", "content": "x"}}, "messages"),
    ("message-empty-content-list", {"messages": [{"role": "user", "content": "ok"},
                                                 {"role": "user", "content": []}]}, "messages[1].content"),
    ("message-bad-role", {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ("message-missing-content", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("message-bad-part-type", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
     "messages[0].content[0].type"),
    ("message-unknown-field", {"messages": [{"role": "user", "content": "x", "name": "bob"}]},
     "messages[0].name"),
    ("message-unknown-attachment", {"messages": [
        {"role": "user", "content": "x"},
        {"role": "user", "content": "y", "attachments": [{"file_id": "file-doesnotexist"}]}]},
     "messages[1].attachments[0].file_id"),
    ("message-metadata-too-many", {"messages": [{"role": "user", "content": "x", "metadata": many(17)}]},
     "messages[0].metadata"),
    ("too-many-code-files", {"tool_resources": {"code_interpreter": {"file_ids": [f"f{i}" for i in range(21)]}}},
     "tool_resources.code_interpreter.file_ids"),
    ("too-many-vector-stores", {"tool_resources": {"file_search": {"vector_store_ids": ["vs_1", "vs_2"]}}},
     "tool_resources.file_search.vector_store_ids"),
    ("unknown-code-file", {"tool_resources": {"code_interpreter": {"file_ids": ["file-doesnotexist"]}}},
     "tool_resources.code_interpreter.file_ids[0]"),
]

MODIFY_THREAD_CASES = [
    ("metadata-key-too-long", {"metadata": {"k" * 65: "v"}}, "metadata"),
    ("unknown-field", {"messages": []}, "messages"),
    ("too-many-vector-stores", {"tool_resources": {"file_search": {"vector_store_ids": ["a", "b"]}}},
     "tool_resources.file_search.vector_store_ids"),
    ("unknown-code-file", {"tool_resources": {"code_interpreter": {"file_ids": ["file-doesnotexist"]}}},
     "tool_resources.code_interpreter.file_ids[0]"),
]

MESSAGE_CASES = [
    ("empty-content-list", {"role": "user", "content": []}, "content"),
    ("bad-role", {"role": "system", "content": "x"}, "role"),
    ("missing-role", {"content": "x"}, "role"),
    ("missing-content", {"role": "user"}, "content"),
    ("content-not-text", {"role": "user", "content": 42}, "content"),
    ("bad-part-type", {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "video"}]},
     "content[1].type"),
    ("text-part-missing-text", {"role": "user", "content": [{"type": "text"}]}, "content[0].text"),
    ("image-url-missing-url", {"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
     "content[0].image_url.url"),
    ("unknown-attachment-file", {"role": "user", "content": "x",
                                 "attachments": [{"file_id": "file-doesnotexist", "tools": []}]},
     "attachments[0].file_id"),
    ("unknown-second-attachment", {"role": "user", "content": "x", "attachments": [
        {"file_id": "{f}"}, {"file_id": "file-doesnotexist"}]}, "attachments[1].file_id"),
    ("unknown-image-file", {"role": "user", "content": [
        {"type": "image_file", "image_file": {"file_id": "file-doesnotexist"}}]}, "content[0].image_file.file_id"),
    ("bad-attachment-tool", {"role": "user", "content": "x",
                             "attachments": [{"file_id": "{f}", "tools": [{"type": "function"}]}]},
     "attachments[0].tools[0].type"),
    ("metadata-too-many", {"role": "user", "content": "x", "metadata": many(17)}, "metadata"),
    ("metadata-value-too-long", {"role": "user", "content": "x", "metadata": {"k": "v" * 513}}, "metadata"),
    ("unknown-field", {"role": "user", "content": "x", "file_ids": []}, "file_ids"),
]

MODIFY_MESSAGE_CASES = [
    ("metadata-value-too-long", {"metadata": {"k": "v" * 513}}, "metadata"),
    ("metadata-too-many", {"metadata": many(17)}, "metadata"),
    ("unknown-field", {"role": "assistant"}, "role"),
]

CASES = (
    [("create-assistant-" + i, "POST", "/v1/assistants", b, p) for i, b, p in ASSISTANT_CASES]
    + [("modify-assistant-" + i, "POST", "/v1/assistants/{a}", b, p) for i, b, p in MODIFY_ASSISTANT_CASES]
    + [("create-thread-" + i, "POST", "/v1/threads", b, p) for i, b, p in THREAD_CASES]
    + [("modify-thread-" + i, "POST", "/v1/threads/{t}", b, p) for i, b, p in MODIFY_THREAD_CASES]
    + [("create-message-" + i, "POST", "/v1/threads/{t}/messages", b, p) for i, b, p in MESSAGE_CASES]
    + [("modify-message-" + i, "POST", "/v1/threads/{t}/messages/{m}", b, p) for i, b, p in MODIFY_MESSAGE_CASES]
)


@pytest.fixture(scope="module")
def targets(server):
    """A live assistant, thread (with one message) and file to aim requests at."""
    with make_http(server.url) as h:
        file_id = h.post("/v1/files", files={"file": ("t.txt", b"text")}, data={"purpose": "assistants"}).json()["id"]
        assistant = h.post("/v1/assistants", json={"model": "gpt-4o", "name": "target", "metadata": {"a": "1"}}).json()
        thread = h.post("/v1/threads", json={"messages": [{"role": "user", "content": "hello"}],
                                              "metadata": {"t": "1"}}).json()
        message = h.get(f"/v1/threads/{thread['id']}/messages").json()["data"][0]
    return {"a": assistant["id"], "t": thread["id"], "m": message["id"], "f": file_id}


def fill(value, targets):
    if isinstance(value, str):
        return value.replace("{f}", targets["f"]) if value == "{f}" else value
    if isinstance(value, list):
        return [fill(v, targets) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, targets) for k, v in value.items()}
    return value


def assert_invalid(response, param) -> dict:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    if param == "metadata":
        # The message names the offending key; the param may point at it too.
        assert error["param"] == "metadata" or error["param"].startswith("metadata."), error
    elif param.endswith(".metadata"):
        assert error["param"] == param or error["param"].startswith(param + "."), error
    else:
        assert error["param"] == param, error
    return error


def snapshot(http, targets) -> dict:
    return {
        "assistant": http.get(f"/v1/assistants/{targets['a']}").json(),
        "thread": http.get(f"/v1/threads/{targets['t']}").json(),
        "messages": http.get(f"/v1/threads/{targets['t']}/messages", params={"limit": 100}).json()["data"],
    }


@pytest.mark.parametrize("method,path,body,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_request(http, targets, method, path, body, param):
    before = snapshot(http, targets)
    response = http.request(method, path.format(**targets), json=fill(body, targets))
    assert_invalid(response, param)
    # The targets were not touched.
    assert snapshot(http, targets) == before


def test_messages_stay_valid_after_rejections(http, targets):
    """The thread the cases aimed at still holds only its first message."""
    data = http.get(f"/v1/threads/{targets['t']}/messages").json()["data"]
    assert [m["id"] for m in data] == [targets["m"]]


# --- bodies that are not JSON objects ----------------------------------------------------------

POST_PATHS = ["/v1/assistants", "/v1/assistants/{a}", "/v1/threads", "/v1/threads/{t}",
              "/v1/threads/{t}/messages", "/v1/threads/{t}/messages/{m}"]


@pytest.mark.parametrize("path", POST_PATHS)
@pytest.mark.parametrize("raw", [b"{not json", b'{"model": "gpt-4o",}', b"[1, 2]", b'"text"', b"42"],
                         ids=["garbage", "trailing-comma", "array", "string", "number"])
def test_body_that_is_not_a_json_object(http, targets, path, raw):
    before = snapshot(http, targets)
    response = http.post(path.format(**targets), content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert snapshot(http, targets) == before


def test_missing_body_where_one_is_required(http):
    response = http.post("/v1/assistants", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- query parameters --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/assistants", "/v1/threads/{t}/messages"])
@pytest.mark.parametrize("params,param", [
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"order": "random"}, "order"),
    ({"after": "nope_doesnotexist"}, "after"),
    ({"before": "nope_doesnotexist"}, "before"),
], ids=["limit-0", "limit-101", "limit-text", "order", "after", "before"])
def test_invalid_list_query(http, targets, path, params, param):
    response = http.get(path.format(**targets), params=params)
    assert_invalid(response, param)


# --- through the SDK ---------------------------------------------------------------------------

def test_sdk_raises_bad_request_with_param(client, targets):
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model="gpt-4o", temperature=5)
    assert info.value.status_code == 400
    assert info.value.param == "temperature"
    assert info.value.type == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model="gpt-4o", tools=[fn("code_interpreter")])
    assert info.value.param == "tools[0].function.name"

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.create(targets["t"], role="user", content=[])
    assert info.value.param == "content"

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.create(targets["t"], role="user", content="x",
                                            attachments=[{"file_id": "file-doesnotexist"}])
    assert info.value.param == "attachments[0].file_id"

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.create(metadata=many(17))
    assert info.value.param == "metadata"

    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model="gpt-4o", extra_body={"bogus_field": 1})
    assert info.value.param == "bogus_field"


def test_v1_beta_header_is_refused(server, targets):
    with make_http(server.url, headers={"OpenAI-Beta": "assistants=v1"}) as h:
        response = h.get(f"/v1/assistants/{targets['a']}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_beta"


# --- a rejected request writes nothing ---------------------------------------------------------

@pytest.fixture(scope="module")
def fresh(spawn):
    """A server of its own, on an empty database, so every row in it was made here."""
    return spawn("validation-writes-nothing")


def test_rejected_assistant_creates_write_nothing(fresh):
    with make_http(fresh.url) as h:
        rejected = [
            {"model": "gpt-4o", "name": "ok", "tool_resources": {
                "code_interpreter": {"file_ids": ["file-doesnotexist"]}}},
            {"model": "gpt-4o", "name": "ok", "temperature": 9},
            {"model": "gpt-4o", "tools": [fn("code_interpreter")]},
            {"name": "no model"},
        ]
        for body in rejected:
            assert h.post("/v1/assistants", json=body).status_code == 400
        assert h.get("/v1/assistants").json()["data"] == []
        assert count_rows(fresh, "assistants") == 0

        made = h.post("/v1/assistants", json={"model": "gpt-4o"}).json()
        assert [a["id"] for a in h.get("/v1/assistants").json()["data"]] == [made["id"]]
        assert count_rows(fresh, "assistants") == 1


def test_rejected_thread_create_writes_no_thread_and_no_messages(fresh):
    with make_http(fresh.url) as h:
        file_id = h.post("/v1/files", files={"file": ("a.txt", b"a")}, data={"purpose": "assistants"}).json()["id"]
        threads, messages = count_rows(fresh, "threads"), count_rows(fresh, "messages")
        rejected = [
            ({"messages": [{"role": "user", "content": "first is fine"},
                           {"role": "user", "content": "second is not",
                            "attachments": [{"file_id": "file-doesnotexist"}]}]},
             "messages[1].attachments[0].file_id"),
            ({"messages": [{"role": "user", "content": "a", "attachments": [{"file_id": file_id}]},
                           {"role": "user", "content": "b"},
                           {"role": "user", "content": [{"type": "image_file",
                                                         "image_file": {"file_id": "file-doesnotexist"}}]}],
              "metadata": {"x": "y"}},
             "messages[2].content[0].image_file.file_id"),
            ({"messages": [{"role": "user", "content": "fine"}],
              "tool_resources": {"code_interpreter": {"file_ids": [file_id, "file-doesnotexist"]}}},
             "tool_resources.code_interpreter.file_ids[1]"),
        ]
        for body, param in rejected:
            assert_invalid(h.post("/v1/threads", json=body), param)
            assert count_rows(fresh, "threads") == threads
            assert count_rows(fresh, "messages") == messages

        # The counting sees what a valid request writes.
        ok = h.post("/v1/threads", json={"messages": [{"role": "user", "content": "a"},
                                                      {"role": "user", "content": "b",
                                                       "attachments": [{"file_id": file_id}]}]})
        assert ok.status_code == 200, ok.text
        assert count_rows(fresh, "threads") == threads + 1
        assert count_rows(fresh, "messages") == messages + 2
        assert count_rows(fresh, "messages", thread_id=ok.json()["id"]) == 2


def test_rejected_message_and_update_write_nothing(fresh):
    with make_http(fresh.url) as h:
        thread = h.post("/v1/threads", json={"metadata": {"keep": "me"}}).json()
        messages = count_rows(fresh, "messages")
        bad = {"role": "user", "content": "x", "attachments": [{"file_id": "file-doesnotexist"}]}
        assert_invalid(h.post(f"/v1/threads/{thread['id']}/messages", json=bad), "attachments[0].file_id")
        assert count_rows(fresh, "messages") == messages
        assert h.get(f"/v1/threads/{thread['id']}/messages").json()["data"] == []

        bad_update = {"metadata": {"changed": "yes"},
                      "tool_resources": {"code_interpreter": {"file_ids": ["file-doesnotexist"]}}}
        assert_invalid(h.post(f"/v1/threads/{thread['id']}", json=bad_update),
                       "tool_resources.code_interpreter.file_ids[0]")
        assert h.get(f"/v1/threads/{thread['id']}").json() == thread


def test_no_422_from_any_endpoint(http, targets):
    """A sweep of wrong shapes at every endpoint: always the 400 envelope, never FastAPI's 422."""
    probes = [
        ("POST", "/v1/assistants", {"model": ["gpt-4o"]}),
        ("POST", "/v1/assistants", {"model": "gpt-4o", "tools": [None]}),
        ("POST", "/v1/assistants", {"model": "gpt-4o", "tool_resources": "none"}),
        ("POST", "/v1/assistants", {"model": "gpt-4o", "tool_resources": {"code_interpreter": {"file_ids": "f"}}}),
        ("POST", "/v1/assistants/{a}", {"name": {"first": "x"}}),
        ("POST", "/v1/assistants/{a}", {"response_format": 7}),
        ("POST", "/v1/threads", {"messages": [None]}),
        ("POST", "/v1/threads", {"messages": [{"role": "user", "content": [None]}]}),
        ("POST", "/v1/threads", {"metadata": ["a"]}),
        ("POST", "/v1/threads/{t}", {"metadata": {"a": {"b": "c"}}}),
        ("POST", "/v1/threads/{t}/messages", {"role": None, "content": None}),
        ("POST", "/v1/threads/{t}/messages", {"role": "user", "content": "x", "attachments": "f"}),
        ("POST", "/v1/threads/{t}/messages", {"role": "user", "content": "x", "attachments": [{"tools": []}]}),
        ("POST", "/v1/threads/{t}/messages/{m}", {"metadata": 5}),
        ("GET", "/v1/assistants?limit=1.5", None),
        ("GET", "/v1/threads/{t}/messages?limit=", None),
    ]
    for method, path, body in probes:
        response = http.request(method, path.format(**targets), json=body)
        assert response.status_code == 400, (method, path, body, response.status_code, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        if body is not None:
            assert error["param"], (path, body, error)
