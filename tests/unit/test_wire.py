"""Wire objects: built from rows exactly as before they were typed, read by the official SDK.

``wire_objects_before_typing.json`` holds what each case below came out as when the objects were
still copied field by field from their rows, with untyped JSON parts (commit d461318): the typed
objects must give the same bytes, key order included. The stream deltas are checked against the
dicts the executor built for them then (``_step_delta``, ``_on_chunk`` and the code
interpreter's outputs delta in ``assistantd/runs/executor.py`` and ``assistantd/tools``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai.types as sdk_types
import openai.types.beta as sdk_beta
import openai.types.beta.threads as sdk_threads
import openai.types.beta.threads.runs as sdk_runs
import openai.types.vector_stores as sdk_vector_stores
import pydantic
import pytest
import sqlalchemy
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from assistantd.api.types import WireModel
from assistantd.assistants.schemas import AssistantObject
from assistantd.db.models import (
    Assistant,
    File,
    Message,
    Run,
    RunStep,
    Thread,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileBatch,
)
from assistantd.files.schemas import FileObject
from assistantd.runs.schemas import (
    RunObject,
    RunStepDeltaEvent,
    RunStepObject,
    ToolCallsStepDetails,
)
from assistantd.threads.schemas import MessageDeltaEvent, MessageObject, TextDeltaJSON, ThreadObject
from assistantd.tools.code_interpreter import CodeInterpreter as CodeInterpreterTool
from assistantd.vector_stores.schemas import VectorStoreFileBatchObject, VectorStoreFileObject, VectorStoreObject
from tests.support.spec import validate_event

BEFORE = json.loads((Path(__file__).parent / "wire_objects_before_typing.json").read_text(encoding="utf-8"))
sdk = SimpleNamespace(
    Assistant=sdk_beta.Assistant, Thread=sdk_beta.Thread, Message=sdk_threads.Message, FileObject=sdk_types.FileObject,
    Run=sdk_threads.Run, RunStep=sdk_runs.RunStep, VectorStore=sdk_types.VectorStore,
    VectorStoreFile=sdk_vector_stores.VectorStoreFile, VectorStoreFileBatch=sdk_vector_stores.VectorStoreFileBatch,
)


def compact(value: Any) -> str:
    """``value`` as the server's JSON: no spaces, UTF-8 text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def unknown_to_sdk(value: Any, path: str = "$") -> list[str]:
    """Paths of the fields an SDK object holds that its type does not declare (the SDK keeps
    unknown fields as extras instead of refusing them)."""
    if isinstance(value, pydantic.BaseModel):
        found = [f"{path}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_to_sdk(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unknown_to_sdk(item, f"{path}[{i}]")]
    return []


def assert_sdk_reads(sdk_type: type[pydantic.BaseModel], text: str, beyond_sdk: tuple[str, ...] = ()) -> None:
    """The SDK parses ``text`` into ``sdk_type`` knowing every field (but ``beyond_sdk``), and
    gives it back unchanged."""
    parsed = sdk_type.model_validate_json(text)
    assert unknown_to_sdk(parsed) == list(beyond_sdk)
    assert parsed.to_dict(mode="json") == json.loads(text)


def private_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if k.startswith("_")] + [p for v in value.values() for p in private_keys(v)]
    if isinstance(value, list):
        return [p for v in value for p in private_keys(v)]
    return []


# --- rows, as the server stores them -----------------------------------------------------------

T = 1_700_000_000
CALL_ID, STEP_ID, MESSAGE_ID = "call_1", "step_1", "msg_1"


def assistant(**values: Any) -> Assistant:
    return Assistant(**{**dict(
        id="asst_1", tenant="t", created_at=T, name=None, description=None, model="gpt-4o", instructions=None,
        tools=[], tool_resources={}, metadata_={}, temperature=None, top_p=None, response_format=None,
        reasoning_effort=None), **values})


def thread(**values: Any) -> Thread:
    return Thread(**{**dict(id="thread_1", tenant="t", created_at=T, tool_resources={}, metadata_={}), **values})


def message(**values: Any) -> Message:
    return Message(**{**dict(
        id=MESSAGE_ID, tenant="t", created_at=T, thread_id="thread_1", status="completed", incomplete_details=None,
        completed_at=T, incomplete_at=None, role="user", content=[], assistant_id=None, run_id=None,
        attachments=[], metadata_={}), **values})


def file(**values: Any) -> File:
    return File(**{**dict(id="file_1", tenant="t", created_at=T, bytes=10, filename="a.txt", purpose="assistants",
                          status="processed", expires_at=None, content_type="text/plain"), **values})


def run(**values: Any) -> Run:
    return Run(**{**dict(
        id="run_1", tenant="t", created_at=T, thread_id="thread_1", assistant_id="asst_1", status="queued",
        required_action=None, last_error=None, expires_at=T + 600, started_at=None, cancelled_at=None,
        failed_at=None, completed_at=None, incomplete_details=None, model="gpt-4o", instructions="", tools=[],
        tool_resources={}, metadata_={}, usage=None, temperature=None, top_p=None, max_prompt_tokens=None,
        max_completion_tokens=None, truncation_strategy={"type": "auto", "last_messages": None},
        tool_choice=None, parallel_tool_calls=True, response_format=None, reasoning_effort=None,
        history_seq=1, worker=None, lease_until=None, include_search_content=False), **values})


def step(**values: Any) -> RunStep:
    return RunStep(**{**dict(
        id=STEP_ID, tenant="t", created_at=T, run_id="run_1", thread_id="thread_1", assistant_id="asst_1",
        type="message_creation", status="in_progress",
        step_details={"type": "message_creation", "message_creation": {"message_id": MESSAGE_ID}},
        last_error=None, expired_at=None, cancelled_at=None, failed_at=None, completed_at=None, metadata_={},
        usage=None), **values})


def vector_store(**values: Any) -> VectorStore:
    return VectorStore(**{**dict(id="vs_1", tenant="t", created_at=T, name=None, description=None, metadata_={},
                                 expires_after=None, expires_at=None, last_active_at=T), **values})


def vector_store_file(**values: Any) -> VectorStoreFile:
    return VectorStoreFile(**{**dict(
        id="file_1", tenant="t", created_at=T, vector_store_id="vs_1", batch_id=None, status="completed",
        last_error=None, usage_bytes=12, attributes=None, worker=None, lease_until=None,
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}),
        **values})


def batch(cancelled: bool = False) -> VectorStoreFileBatch:
    return VectorStoreFileBatch(id="vsfb_1", tenant="t", created_at=T, vector_store_id="vs_1", cancelled=cancelled)


USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
# A finished tool-call step as the executor stores it, private keys included.
STORED_TOOL_CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}", "output": None}},
    {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{\"a\":1}", "output": "42"}},
    {"id": "call_3", "type": "code_interpreter",
     "code_interpreter": {"input": "print(1)", "outputs": [{"type": "logs", "logs": "1"},
                                                          {"type": "image", "image": {"file_id": "file_7"}}]},
     "_arguments": "{\"code\": \"print(1)\"}", "_index": 2, "_output": "1"},
    {"id": "call_4", "type": "file_search",
     "file_search": {"ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0},
                     "results": [{"file_id": "file_4", "file_name": "a.txt", "score": 0.8125,
                                  "content": [{"type": "text", "text": "passage one"}]}]},
     "_arguments": "{\"query\": \"q\"}", "_index": 3, "_output": "【0:0†a.txt】 passage one",
     "_results": {"0:0": "file_4"}},
    {"id": "call_5", "type": "file_search", "file_search": {}, "_arguments": "{}", "_index": 4},
]


# --- objects built from rows -------------------------------------------------------------------

SETTINGS = dict(
    name="Tutor", description="d", instructions="Be brief.", metadata_={"k": "v"}, temperature=0.5, top_p=1,
    tools=[{"type": "code_interpreter"}, {"type": "file_search", "file_search": {"max_num_results": 5}},
           {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    tool_resources={"code_interpreter": {"file_ids": ["file_1"]}}, response_format={"type": "json_object"})
USER_CONTENT = [
    {"type": "text", "text": {"value": "h\u00e9llo \u2603", "annotations": []}},
    {"type": "image_file", "image_file": {"file_id": "file_1"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
]
ATTACHMENTS = [{"file_id": "file_3", "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]}]
ANSWER = "See \u30100:0\u2020a.txt\u3011 and sandbox:/mnt/data/o.csv"
ASSISTANT_CONTENT = [
    {"type": "image_file", "image_file": {"file_id": "file_9"}},
    {"type": "text", "text": {"value": ANSWER, "annotations": [
        {"type": "file_citation", "text": "\u30100:0\u2020a.txt\u3011", "start_index": 4, "end_index": 15,
         "file_citation": {"file_id": "file_4"}},
        {"type": "file_path", "text": "sandbox:/mnt/data/o.csv", "start_index": 20, "end_index": 43,
         "file_path": {"file_id": "file_5"}}]}},
]
WAITING = dict(
    status="requires_action", started_at=T + 1, tools=[{"type": "function", "function": {"name": "lookup"}}],
    required_action={"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
        {"id": CALL_ID, "type": "function", "function": {"name": "lookup", "arguments": "{\"x\": 1}"}}]}},
    usage=USAGE, tool_choice={"type": "function", "function": {"name": "lookup"}}, temperature=0.2, top_p=0.9,
    response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": True}},
    truncation_strategy={"type": "last_messages", "last_messages": 4}, max_prompt_tokens=1000,
    max_completion_tokens=500, parallel_tool_calls=False, metadata_={"x": "y"})
TOOL_STEP = dict(type="tool_calls", status="completed", completed_at=T + 3, usage=USAGE,
                 step_details={"type": "tool_calls", "tool_calls": STORED_TOOL_CALLS})
EXPIRING = dict(expires_after={"anchor": "last_active_at", "days": 1})

OBJECTS = [
    pytest.param(lambda: AssistantObject.from_row(assistant()), sdk.Assistant, id="assistant-unset-sampling"),
    pytest.param(lambda: AssistantObject.from_row(assistant(**SETTINGS)), sdk.Assistant, id="assistant-settings"),
    pytest.param(lambda: ThreadObject.from_row(thread(metadata_={"a": "b"})), sdk.Thread, id="thread"),
    pytest.param(lambda: ThreadObject.from_row(thread(tool_resources=None)), sdk.Thread, id="thread-null-resources"),
    pytest.param(lambda: MessageObject.from_row(message(content=USER_CONTENT, attachments=ATTACHMENTS,
                                                        metadata_={"m": "1"})),
                 sdk.Message, id="user-message"),
    pytest.param(lambda: MessageObject.from_row(message(
                     role="assistant", assistant_id="asst_1", run_id="run_1", status="incomplete", completed_at=None,
                     incomplete_at=T + 5, incomplete_details={"reason": "max_tokens"}, content=ASSISTANT_CONTENT)),
                 sdk.Message, id="assistant-message-incomplete"),
    pytest.param(lambda: FileObject.from_row(file()), sdk.FileObject, id="file-never-expires"),
    pytest.param(lambda: FileObject.from_row(file(purpose="assistants_output", expires_at=T + 3600)),
                 sdk.FileObject, id="file-expires"),
    pytest.param(lambda: RunObject.from_row(run()), sdk.Run, id="run-queued"),
    pytest.param(lambda: RunObject.from_row(run(**WAITING)), sdk.Run, id="run-requires-action"),
    pytest.param(lambda: RunObject.from_row(run(status="failed", started_at=T + 1, failed_at=T + 2,
                                                last_error={"code": "rate_limit_exceeded", "message": "slow down"})),
                 sdk.Run, id="run-failed"),
    pytest.param(lambda: RunObject.from_row(run(status="incomplete", started_at=T + 1, usage=USAGE,
                                                incomplete_details={"reason": "max_prompt_tokens"},
                                                tool_choice="required", response_format="auto")),
                 sdk.Run, id="run-incomplete"),
    pytest.param(lambda: RunStepObject.from_row(step()), sdk.RunStep, id="step-message-creation"),
    pytest.param(lambda: RunStepObject.from_row(step(status="completed", completed_at=T + 2, usage=USAGE)),
                 sdk.RunStep, id="step-message-creation-completed"),
    pytest.param(lambda: RunStepObject.from_row(step(type="tool_calls",
                                                     step_details={"type": "tool_calls", "tool_calls": []})),
                 sdk.RunStep, id="step-tool-calls-open"),
    pytest.param(lambda: RunStepObject.from_row(step(**TOOL_STEP)), sdk.RunStep, id="step-tool-calls"),
    pytest.param(lambda: RunStepObject.from_row(step(**TOOL_STEP), include_search_content=True),
                 sdk.RunStep, id="step-tool-calls-with-search-content"),
    pytest.param(lambda: RunStepObject.from_row(step(status="failed", failed_at=T + 4,
                                                     last_error={"code": "server_error", "message": "boom"})),
                 sdk.RunStep, id="step-failed"),
    pytest.param(lambda: RunStepObject.from_row(step(status="expired", expired_at=T + 4, metadata_={"s": "t"})),
                 sdk.RunStep, id="step-expired"),
    pytest.param(lambda: VectorStoreObject.from_row(vector_store(), {"completed": 2}, 100, T),
                 sdk.VectorStore, id="vector-store-unnamed"),
    pytest.param(lambda: VectorStoreObject.from_row(
                     vector_store(name="docs", description="about", metadata_={"a": "b"}, expires_at=T + 10,
                                  **EXPIRING), {"in_progress": 1, "failed": 1}, 0, T),
                 sdk.VectorStore, id="vector-store-in-progress"),
    pytest.param(lambda: VectorStoreObject.from_row(vector_store(expires_at=T - 1, **EXPIRING), {"in_progress": 1},
                                                    0, T),
                 sdk.VectorStore, id="vector-store-expired"),
    pytest.param(lambda: VectorStoreFileObject.from_row(vector_store_file()),
                 sdk.VectorStoreFile, id="vector-store-file"),
    pytest.param(lambda: VectorStoreFileObject.from_row(vector_store_file(
                     status="failed", usage_bytes=0, last_error={"code": "unsupported_file", "message": "no"},
                     attributes={"k": 1, "b": True, "s": "x", "f": 1.5})),
                 sdk.VectorStoreFile, id="vector-store-file-failed"),
    pytest.param(lambda: VectorStoreFileBatchObject.from_row(batch(), {"in_progress": 1, "completed": 1}),
                 sdk.VectorStoreFileBatch, id="batch-in-progress"),
    pytest.param(lambda: VectorStoreFileBatchObject.from_row(batch(cancelled=True), {"completed": 1}),
                 sdk.VectorStoreFileBatch, id="batch-cancelled"),
    pytest.param(lambda: VectorStoreFileBatchObject.from_row(batch(), {"failed": 2}),
                 sdk.VectorStoreFileBatch, id="batch-failed"),
    pytest.param(lambda: VectorStoreFileBatchObject.from_row(batch(), {}),
                 sdk.VectorStoreFileBatch, id="batch-empty"),
]


@pytest.mark.parametrize("build, sdk_type", OBJECTS)
def test_from_row_gives_what_it_gave_before(build, sdk_type, request) -> None:
    assert build().model_dump_json(by_alias=True) == compact(BEFORE[request.node.callspec.id])


@pytest.mark.parametrize("build, sdk_type", OBJECTS)
def test_from_row_of_the_instance_dict_gives_what_reading_attributes_gives(build, sdk_type, monkeypatch) -> None:
    """``WireModel.ROW_FIELDS_ARE_COLUMNS``: validating the row's loaded values gives the same
    object as reading each attribute."""
    fast = build().model_dump_json(by_alias=True)
    for cls in _row_dict_classes():
        monkeypatch.setattr(cls, "ROW_FIELDS_ARE_COLUMNS", False)
    assert build().model_dump_json(by_alias=True) == fast


ROW_CLASSES = {RunObject: Run, RunStepObject: RunStep, MessageObject: Message}


def _row_dict_classes() -> list[type[WireModel]]:
    found, todo = [], [WireModel]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__dict__.get("ROW_FIELDS_ARE_COLUMNS"):
            found.append(cls)
    return found


def test_what_a_row_dict_class_reads_is_a_column_of_its_row() -> None:
    # A field with a default that no column held would take its default from the instance dict,
    # where reading the attribute (a property, a relationship) would have given its value.
    assert set(_row_dict_classes()) == set(ROW_CLASSES), "a class reads its row's dict: name its row here"
    for cls, row in ROW_CLASSES.items():
        columns = {attribute.key for attribute in sqlalchemy.inspect(row).column_attrs}
        read = {field.validation_alias or name for name, field in cls.model_fields.items()} - {"object"}
        assert read <= columns, f"{cls.__name__} reads {sorted(read - columns)}, which {row.__name__} has no column for"


def test_from_row_reads_a_column_not_loaded_as_an_attribute() -> None:
    # Not loaded (expired on a detached row): the attribute says why, where the dict would have
    # no value to give.
    unloaded = run()
    del unloaded.__dict__["usage"]
    set_committed_value(unloaded, "seq", 1)
    make_transient_to_detached(unloaded)
    assert "usage" in sqlalchemy.inspect(unloaded).expired_attributes
    with pytest.raises(pydantic.ValidationError, match="usage\n.*DetachedInstanceError"):
        RunObject.from_row(unloaded)  # (what reading the attributes always raised: not a default)


# A vector store's description has been sent since vector stores were made (their create
# request takes one), though neither the spec's VectorStoreObject nor the SDK's VectorStore has it.
BEYOND_SDK = {"vector-store-in-progress": ("$.description",)}


@pytest.mark.parametrize("build, sdk_type", OBJECTS)
def test_the_sdk_reads_every_object(build, sdk_type, request) -> None:
    beyond_sdk = BEYOND_SDK.get(request.node.callspec.id, ())
    assert_sdk_reads(sdk_type, build().model_dump_json(by_alias=True), beyond_sdk)


def test_the_response_is_the_one_serialisation() -> None:
    obj = RunObject.from_row(run())
    response = obj.response()
    assert response.body.decode() == obj.model_dump_json(by_alias=True)
    assert response.media_type == "application/json"


def test_stored_private_keys_are_dropped() -> None:
    stored = {"type": "tool_calls", "tool_calls": STORED_TOOL_CALLS}
    assert private_keys(stored)  # the rows of today still hold them
    details = ToolCallsStepDetails.model_validate(stored)
    assert private_keys(json.loads(details.model_dump_json())) == []
    assert all(not (call.model_extra or {}) for call in details.tool_calls)
    for include in (False, True):
        step_row = step(type="tool_calls", step_details=stored)
        assert private_keys(json.loads(RunStepObject.from_row(step_row, include).model_dump_json())) == []


def test_search_content_is_shown_only_when_asked_and_stays_stored() -> None:
    row = step(type="tool_calls", step_details={"type": "tool_calls", "tool_calls": STORED_TOOL_CALLS})
    hidden = RunStepObject.from_row(row).step_details.tool_calls[3].file_search.results[0]
    shown = RunStepObject.from_row(row, include_search_content=True).step_details.tool_calls[3].file_search.results[0]
    assert hidden.content is None and "content" not in hidden.model_dump_json()
    assert [c.text for c in shown.content] == ["passage one"]
    assert row.step_details["tool_calls"][3]["file_search"]["results"][0]["content"]  # the row is untouched


def test_error_codes_are_the_specs() -> None:
    """A step's last_error has two codes, a run's three (``invalid_prompt`` is the run's own)."""
    error = {"code": "invalid_prompt", "message": "no"}
    assert RunObject.from_row(run(status="failed", last_error=error)).last_error.code == "invalid_prompt"
    with pytest.raises(pydantic.ValidationError):
        RunStepObject.from_row(step(status="failed", last_error=error))


def test_events_of_objects_match_the_spec() -> None:
    validate_event("thread.run.requires_action", OBJECTS_BY_ID["run-requires-action"]().model_dump_json())
    validate_event("thread.run.step.completed", OBJECTS_BY_ID["step-tool-calls"]().model_dump_json())
    validate_event("thread.message.incomplete", OBJECTS_BY_ID["assistant-message-incomplete"]().model_dump_json())


OBJECTS_BY_ID = {case.id: case.values[0] for case in OBJECTS}


# --- stream deltas -----------------------------------------------------------------------------

def step_delta(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": STEP_ID, "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}}


CODE = CodeInterpreterTool(None)  # type: ignore[arg-type]  (no sandbox: only its delta bodies)
OUTPUTS = [{"type": "logs", "logs": "1\n"}, {"type": "image", "image": {"file_id": "file_7"}}]
DELTAS = [
    pytest.param(lambda: MessageDeltaEvent.text(MESSAGE_ID, 1, "h\u00e9llo"),
                 {"id": MESSAGE_ID, "object": "thread.message.delta", "delta": {"content": [
                     {"index": 1, "type": "text", "text": {"value": "h\u00e9llo", "annotations": []}}]}},
                 id="message-text"),
    pytest.param(lambda: RunStepDeltaEvent.tool_call(STEP_ID, 0, "function",
                                                     {"name": "lookup", "arguments": "", "output": None}, CALL_ID),
                 step_delta({"index": 0, "type": "function", "id": CALL_ID,
                             "function": {"name": "lookup", "arguments": "", "output": None}}),
                 id="function-call-opens"),
    pytest.param(lambda: RunStepDeltaEvent.tool_call(STEP_ID, 0, "function", {"arguments": '{"city'}),
                 step_delta({"index": 0, "type": "function", "function": {"arguments": '{"city'}}),
                 id="function-arguments"),
    pytest.param(lambda: RunStepDeltaEvent.tool_call(STEP_ID, 1, "code_interpreter", CODE.opening(), CALL_ID),
                 step_delta({"index": 1, "type": "code_interpreter", "id": CALL_ID,
                             "code_interpreter": {"input": "", "outputs": []}}),
                 id="code-call-opens"),
    pytest.param(lambda: RunStepDeltaEvent.tool_call(STEP_ID, 1, "code_interpreter", CODE.input_delta("print(")),
                 step_delta({"index": 1, "type": "code_interpreter", "code_interpreter": {"input": "print("}}),
                 id="code-input"),
    pytest.param(lambda: RunStepDeltaEvent.tool_call(STEP_ID, 1, "code_interpreter", {"outputs": [
                     {"index": i, **o} for i, o in enumerate(OUTPUTS)]}),
                 step_delta({"index": 1, "type": "code_interpreter", "code_interpreter": {"outputs": [
                     {"index": 0, "type": "logs", "logs": "1\n"},
                     {"index": 1, "type": "image", "image": {"file_id": "file_7"}}]}}),
                 id="code-outputs"),
    pytest.param(lambda: RunStepDeltaEvent.tool_call(STEP_ID, 2, "file_search", {}, CALL_ID),
                 step_delta({"index": 2, "type": "file_search", "id": CALL_ID, "file_search": {}}),
                 id="file-search-call-opens"),
]


@pytest.mark.parametrize("build, before", DELTAS)
def test_deltas_give_what_the_executor_sent_before(build, before) -> None:
    """Key for key, in order: a field the delta does not carry is absent, not null."""
    event = build()
    assert event.model_dump_json(by_alias=True) == compact(before)
    assert event.model_dump() == before


@pytest.mark.parametrize("build, before", DELTAS)
def test_the_sdk_reads_every_delta(build, before) -> None:
    event = build()
    sdk_type = sdk_threads.MessageDeltaEvent if isinstance(event, MessageDeltaEvent) else sdk_runs.RunStepDeltaEvent
    assert_sdk_reads(sdk_type, event.model_dump_json(by_alias=True))
    validate_event(event.object, event.model_dump_json(by_alias=True))


TEXT_VALUES = ["", "h\u00e9llo", 'quote " back\\slash', "new\nline\ttab\r\x00\x1f\x7f", "\u2028\u2029 \U0001f600 \u65e5\u672c",
               "<script>&amp;</script>", "@@assistantd-text-delta@@", "x" * 5000]


@pytest.mark.parametrize("value", TEXT_VALUES)
def test_text_delta_json_is_the_models_own_json(value) -> None:
    """The per-token fast path (TextDeltaJSON) writes exactly what MessageDeltaEvent.text would."""
    for index in (0, 3):
        fast = TextDeltaJSON(MESSAGE_ID, index)(value)
        assert fast == MessageDeltaEvent.text(MESSAGE_ID, index, value).model_dump_json(by_alias=True)
        assert_sdk_reads(sdk_threads.MessageDeltaEvent, fast)


@pytest.mark.parametrize("message_id", ["msg_abc123", 'msg_"quoted"\\', "msg_\u00e9\u2028", "@@assistantd-message-id@@"])
def test_text_delta_json_puts_each_messages_id_in_the_template_made_once(message_id) -> None:
    for index in (0, 1):
        for value in ("a", "@@assistantd-message-id@@"):
            fast = TextDeltaJSON(message_id, index)(value)
            assert fast == MessageDeltaEvent.text(message_id, index, value).model_dump_json(by_alias=True)
