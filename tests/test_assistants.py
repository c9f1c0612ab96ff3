"""Assistants: create (every field), retrieve, partial update, delete, list — over the SDK and raw HTTP."""

from __future__ import annotations

import secrets
import time

import openai
import pytest

ASSISTANT_FIELDS = ("id", "object", "created_at", "name", "description", "model", "instructions",
                    "tools", "tool_resources", "metadata", "temperature", "top_p", "response_format")

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}

ALL_TOOLS = [
    {"type": "code_interpreter"},
    {"type": "file_search",
     "file_search": {"max_num_results": 7,
                     "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.25}}},
    {"type": "function",
     "function": {"name": "get_weather", "description": "Weather for a city",
                  "parameters": WEATHER_PARAMETERS, "strict": True}},
]

RESPONSE_FORMATS = [
    "auto",
    {"type": "text"},
    {"type": "json_object"},
    {"type": "json_schema",
     "json_schema": {"name": "answer", "description": "A single answer",
                     "schema": {"type": "object", "properties": {"value": {"type": "number"}},
                                "required": ["value"], "additionalProperties": False},
                     "strict": True}},
]


def upload(client, name: str = "notes.txt", data: bytes | None = None) -> str:
    data = data if data is not None else secrets.token_bytes(16)
    return client.files.create(file=(name, data), purpose="assistants").id


def assert_assistant_shape(body: dict) -> None:
    for field in ASSISTANT_FIELDS:
        assert field in body, f"missing {field}"
    assert body["object"] == "assistant"
    assert body["id"].startswith("asst_") and len(body["id"]) > len("asst_")
    assert type(body["created_at"]) is int
    assert abs(body["created_at"] - time.time()) < 120
    assert isinstance(body["tools"], list)
    assert isinstance(body["metadata"], dict)


# --- create ------------------------------------------------------------------------------------

def test_create_with_every_field_round_trips(client, http):
    files = [upload(client, "a.py", b"print(1)\n"), upload(client, "b.csv", b"x,y\n1,2\n")]
    request = {
        "model": "gpt-4o",
        "name": "Data Helper",
        "description": "Answers questions about CSV files.",
        "instructions": "You analyse data. Be terse.",
        "tools": ALL_TOOLS,
        "tool_resources": {"code_interpreter": {"file_ids": files}},
        "metadata": {"team": "research", "tier": "gold"},
        "temperature": 0.7,
        "top_p": 0.9,
        "response_format": RESPONSE_FORMATS[3],
    }
    created = http.post("/v1/assistants", json=request)
    assert created.status_code == 200, created.text
    body = created.json()
    assert_assistant_shape(body)
    for field in ("model", "name", "description", "instructions", "tools", "metadata",
                  "temperature", "top_p", "response_format"):
        assert body[field] == request[field], field
    assert body["tool_resources"]["code_interpreter"]["file_ids"] == files

    # The same object comes back from retrieve, raw and through the SDK.
    fetched = http.get(f"/v1/assistants/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body
    assistant = client.beta.assistants.retrieve(body["id"])
    assert assistant.id == body["id"]
    assert assistant.name == "Data Helper"
    assert [t.type for t in assistant.tools] == ["code_interpreter", "file_search", "function"]
    assert assistant.tools[1].file_search.max_num_results == 7
    assert assistant.tools[1].file_search.ranking_options.score_threshold == 0.25
    assert assistant.tools[2].function.name == "get_weather"
    assert assistant.tools[2].function.parameters == WEATHER_PARAMETERS
    assert assistant.tools[2].function.strict is True
    assert assistant.tool_resources.code_interpreter.file_ids == files
    assert assistant.metadata == {"team": "research", "tier": "gold"}
    assert assistant.temperature == pytest.approx(0.7)
    assert assistant.top_p == pytest.approx(0.9)
    assert assistant.response_format.type == "json_schema"
    assert assistant.response_format.json_schema.name == "answer"


def test_create_through_sdk(client):
    file_id = upload(client)
    assistant = client.beta.assistants.create(
        model="gpt-4o-mini",
        name="SDK made",
        description="desc",
        instructions="Be nice.",
        tools=[{"type": "code_interpreter"}, {"type": "file_search"},
               {"type": "function", "function": {"name": "noop"}}],
        tool_resources={"code_interpreter": {"file_ids": [file_id]}},
        metadata={"k": "v"},
        temperature=0.0,
        top_p=0.5,
        response_format={"type": "json_object"},
    )
    assert assistant.id.startswith("asst_")
    assert assistant.object == "assistant"
    assert isinstance(assistant.created_at, int)
    assert assistant.model == "gpt-4o-mini"
    assert (assistant.name, assistant.description, assistant.instructions) == ("SDK made", "desc", "Be nice.")
    assert [t.type for t in assistant.tools] == ["code_interpreter", "file_search", "function"]
    assert assistant.tools[2].function.name == "noop"
    assert assistant.tool_resources.code_interpreter.file_ids == [file_id]
    assert assistant.metadata == {"k": "v"}
    assert assistant.temperature == 0.0
    assert assistant.top_p == 0.5
    assert assistant.response_format.type == "json_object"


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS, ids=["auto", "text", "json_object", "json_schema"])
def test_response_format_variants_echo(http, response_format):
    r = http.post("/v1/assistants", json={"model": "gpt-4o", "response_format": response_format})
    assert r.status_code == 200, r.text
    assert r.json()["response_format"] == response_format
    again = http.get(f"/v1/assistants/{r.json()['id']}").json()
    assert again["response_format"] == response_format


def test_minimal_assistant_raw_shape(http):
    r = http.post("/v1/assistants", json={"model": "gpt-4o"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_assistant_shape(body)
    assert body["model"] == "gpt-4o"
    # Nullable strings are present and null when not given.
    assert body["name"] is None
    assert body["description"] is None
    assert body["instructions"] is None
    assert body["tools"] == []
    assert body["metadata"] == {}
    assert not (body["tool_resources"] or {}).get("code_interpreter", {}).get("file_ids")
    # Sampling values are numbers (OpenAI showed its defaults), never missing.
    assert isinstance(body["temperature"], (int, float))
    assert isinstance(body["top_p"], (int, float))
    assert body["response_format"] in ("auto", None)


def test_ids_are_unique(client):
    ids = {client.beta.assistants.create(model="gpt-4o").id for _ in range(5)}
    assert len(ids) == 5


def test_metadata_null_value_stores_nothing(http):
    r = http.post("/v1/assistants", json={"model": "gpt-4o", "metadata": {"keep": "yes", "drop": None}})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"keep": "yes"}


def test_accepts_values_at_the_limits(http):
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(128)]
    metadata = {f"{i:02d}".ljust(64, "k"): "v" * 512 for i in range(16)}
    r = http.post("/v1/assistants", json={
        "model": "gpt-4o",
        "name": "n" * 256,
        "description": "d" * 512,
        "instructions": "i" * 256_000,
        "tools": tools,
        "metadata": metadata,
        "temperature": 2,
        "top_p": 0,
    })
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert len(body["name"]) == 256 and len(body["description"]) == 512
    assert len(body["instructions"]) == 256_000
    assert len(body["tools"]) == 128
    assert body["metadata"] == metadata
    assert body["temperature"] == 2 and body["top_p"] == 0

    r = http.post("/v1/assistants", json={"model": "gpt-4o", "temperature": 0, "top_p": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["temperature"], r.json()["top_p"]) == (0, 1)


def test_code_interpreter_accepts_twenty_files(client, http):
    files = [upload(client, f"f{i}.txt", str(i).encode()) for i in range(20)]
    r = http.post("/v1/assistants", json={"model": "gpt-4o",
                                          "tool_resources": {"code_interpreter": {"file_ids": files}}})
    assert r.status_code == 200, r.text
    assert r.json()["tool_resources"]["code_interpreter"]["file_ids"] == files


def test_unknown_or_deleted_file_in_tool_resources(client, http):
    file_id = upload(client)
    client.files.delete(file_id)
    for bad in ("file-doesnotexist", file_id):
        r = http.post("/v1/assistants", json={
            "model": "gpt-4o", "tool_resources": {"code_interpreter": {"file_ids": [bad]}}})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["param"] == "tool_resources.code_interpreter.file_ids[0]"
        assert bad in r.json()["error"]["message"]


# --- retrieve ----------------------------------------------------------------------------------

def test_retrieve_unknown_is_404(client, http):
    with pytest.raises(openai.NotFoundError) as info:
        client.beta.assistants.retrieve("asst_doesnotexist")
    assert info.value.status_code == 404
    r = http.get("/v1/assistants/asst_doesnotexist")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "asst_doesnotexist" in error["message"]


# --- update ------------------------------------------------------------------------------------

def _full_assistant(http, client) -> dict:
    file_id = upload(client)
    r = http.post("/v1/assistants", json={
        "model": "gpt-4o",
        "name": "Before",
        "description": "Original description",
        "instructions": "Original instructions",
        "tools": ALL_TOOLS,
        "tool_resources": {"code_interpreter": {"file_ids": [file_id]}},
        "metadata": {"a": "1", "b": "2"},
        "temperature": 0.3,
        "top_p": 0.4,
        "response_format": {"type": "json_object"},
    })
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("change", [
    {"name": "After"},
    {"description": "New description"},
    {"instructions": "New instructions"},
    {"model": "gpt-4o-mini"},
    {"tools": [{"type": "code_interpreter"}]},
    {"tools": []},
    {"metadata": {"c": "3"}},
    {"temperature": 1.5},
    {"top_p": 0.1},
    {"response_format": {"type": "text"}},
    {"response_format": "auto"},
    {"name": None},
    {"description": None, "instructions": None},
], ids=lambda c: "+".join(f"{k}={'null' if v is None else type(v).__name__}" for k, v in c.items()))
def test_update_changes_only_given_fields(http, client, change):
    before = _full_assistant(http, client)
    r = http.post(f"/v1/assistants/{before['id']}", json=change)
    assert r.status_code == 200, r.text
    after = r.json()
    assert_assistant_shape(after)
    expected = {**before, **change}
    assert after == expected
    assert http.get(f"/v1/assistants/{before['id']}").json() == expected


def test_update_through_sdk(client, http):
    before = _full_assistant(http, client)
    updated = client.beta.assistants.update(before["id"], model="gpt-4.1", name="Renamed",
                                            metadata={"x": "y"})
    assert updated.id == before["id"]
    assert updated.model == "gpt-4.1"
    assert updated.name == "Renamed"
    assert updated.metadata == {"x": "y"}  # metadata is replaced as a whole
    assert updated.description == before["description"]
    assert updated.instructions == before["instructions"]
    assert updated.created_at == before["created_at"]
    assert client.beta.assistants.retrieve(before["id"]).model == "gpt-4.1"


def test_update_tool_resources(client, http):
    before = _full_assistant(http, client)
    new_files = [upload(client), upload(client)]
    r = http.post(f"/v1/assistants/{before['id']}",
                  json={"tool_resources": {"code_interpreter": {"file_ids": new_files}}})
    assert r.status_code == 200, r.text
    assert r.json()["tool_resources"]["code_interpreter"]["file_ids"] == new_files
    assert r.json()["tools"] == before["tools"]


def test_empty_update_changes_nothing(http, client):
    before = _full_assistant(http, client)
    r = http.post(f"/v1/assistants/{before['id']}", json={})
    assert r.status_code == 200, r.text
    assert r.json() == before


def test_rejected_update_writes_nothing(http, client):
    before = _full_assistant(http, client)
    r = http.post(f"/v1/assistants/{before['id']}", json={
        "name": "Should not stick",
        "tool_resources": {"code_interpreter": {"file_ids": ["file-doesnotexist"]}},
    })
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tool_resources.code_interpreter.file_ids[0]"
    assert http.get(f"/v1/assistants/{before['id']}").json() == before

    r = http.post(f"/v1/assistants/{before['id']}", json={"name": "Nope", "temperature": 3})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "temperature"
    assert http.get(f"/v1/assistants/{before['id']}").json() == before


def test_update_unknown_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.update("asst_doesnotexist", name="x")


# --- delete ------------------------------------------------------------------------------------

def test_delete_then_404(client, http):
    assistant = client.beta.assistants.create(model="gpt-4o", name="doomed")
    deleted = client.beta.assistants.delete(assistant.id)
    assert deleted.id == assistant.id
    assert deleted.deleted is True
    assert deleted.object == "assistant.deleted"
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(assistant.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.update(assistant.id, name="zombie")
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.delete(assistant.id)
    listed = [a.id for a in client.beta.assistants.list(limit=100)]
    assert assistant.id not in listed


def test_delete_raw_shape(http):
    created = http.post("/v1/assistants", json={"model": "gpt-4o"}).json()
    r = http.delete(f"/v1/assistants/{created['id']}")
    assert r.status_code == 200
    assert r.json() == {"id": created["id"], "object": "assistant.deleted", "deleted": True}
    assert http.delete(f"/v1/assistants/{created['id']}").status_code == 404


# --- list --------------------------------------------------------------------------------------

def test_list_newest_first_by_default(client, http):
    made = [client.beta.assistants.create(model="gpt-4o", name=f"list-{i}").id for i in range(5)]
    page = client.beta.assistants.list(limit=5)
    assert [a.id for a in page.data] == made[::-1]

    raw = http.get("/v1/assistants", params={"limit": 5}).json()
    assert raw["object"] == "list"
    assert [a["id"] for a in raw["data"]] == made[::-1]
    assert raw["first_id"] == made[-1] and raw["last_id"] == made[0]
    assert isinstance(raw["has_more"], bool)
    for item in raw["data"]:
        assert_assistant_shape(item)


def test_list_asc_after_cursor(client):
    made = [client.beta.assistants.create(model="gpt-4o", name=f"asc-{i}").id for i in range(4)]
    page = client.beta.assistants.list(order="asc", after=made[0], limit=3)
    assert [a.id for a in page.data] == made[1:]
    assert page.has_more is False
    page = client.beta.assistants.list(order="asc", after=made[0], limit=2)
    assert [a.id for a in page.data] == made[1:3]
    assert page.has_more is True


def test_list_objects_match_retrieve(client, http):
    assistant = _full_assistant(http, client)
    listed = http.get("/v1/assistants", params={"limit": 1}).json()["data"]
    assert listed == [assistant]
