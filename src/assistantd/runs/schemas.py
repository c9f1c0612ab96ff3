"""Run and run-step requests, and the ``thread.run`` / ``thread.run.step`` objects."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field

from assistantd.api.types import (
    Lenient,
    MAX_INT32,
    Metadata,
    ModelName,
    ReasoningEffort,
    RequestModel,
    ResponseFormat,
    RunTools,
    Temperature,
    ToolResources,
    TopP,
    WireModel,
)
from assistantd.db.models import Run, RunStep
from assistantd.threads.schemas import CreateMessageRequest, CreateThreadRequest

# Statuses (ENDPOINTS.md §1).
ACTIVE_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")
TERMINAL_STATUSES = ("cancelled", "failed", "completed", "incomplete", "expired")


class TruncationStrategy(Lenient):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1, le=MAX_INT32)


class NamedToolFunction(Lenient):
    name: str


class NamedToolChoice(Lenient):
    type: Literal["function", "code_interpreter", "file_search"]
    function: NamedToolFunction | None = None


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]


class _RunOptions(RequestModel):
    model: ModelName | None = None
    reasoning_effort: ReasoningEffort = None
    instructions: str | None = None
    tools: RunTools | None = None
    metadata: Metadata = None
    temperature: Temperature = None
    top_p: TopP = None
    stream: bool | None = None
    max_prompt_tokens: int | None = Field(default=None, ge=256, le=MAX_INT32)
    max_completion_tokens: int | None = Field(default=None, ge=256, le=MAX_INT32)
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None


class CreateRunRequest(_RunOptions):
    assistant_id: str
    additional_instructions: str | None = None
    additional_messages: list[CreateMessageRequest] | None = None


class CreateThreadAndRunRequest(_RunOptions):
    assistant_id: str
    thread: CreateThreadRequest | None = None
    tool_resources: ToolResources | None = None


class ToolOutput(Lenient):
    tool_call_id: str | None = None
    output: str | None = None


class SubmitToolOutputsRequest(RequestModel):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None


class ModifyRunRequest(RequestModel):
    metadata: Metadata = None


# --- objects -----------------------------------------------------------------------------------

class RunObject(WireModel):
    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: str
    required_action: dict[str, Any] | None
    last_error: dict[str, Any] | None
    expires_at: int | None
    started_at: int | None
    cancelled_at: int | None
    failed_at: int | None
    completed_at: int | None
    incomplete_details: dict[str, Any] | None
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    metadata: dict[str, str]
    usage: dict[str, int] | None
    temperature: float | None
    top_p: float | None
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    truncation_strategy: dict[str, Any] | None
    tool_choice: Any
    parallel_tool_calls: bool
    response_format: Any

    @classmethod
    def from_row(cls, row: Run) -> "RunObject":
        return cls(
            id=row.id,
            created_at=row.created_at,
            thread_id=row.thread_id,
            assistant_id=row.assistant_id,
            status=row.status,
            required_action=row.required_action,
            last_error=row.last_error,
            # Once a run has ended nothing can expire any more; OpenAI showed null then.
            expires_at=row.expires_at if row.status in ACTIVE_STATUSES else None,
            started_at=row.started_at,
            cancelled_at=row.cancelled_at,
            failed_at=row.failed_at,
            completed_at=row.completed_at,
            incomplete_details=row.incomplete_details,
            model=row.model,
            instructions=row.instructions,
            tools=row.tools,
            metadata=row.metadata_,
            usage=row.usage,
            temperature=1.0 if row.temperature is None else row.temperature,
            top_p=1.0 if row.top_p is None else row.top_p,
            max_prompt_tokens=row.max_prompt_tokens,
            max_completion_tokens=row.max_completion_tokens,
            truncation_strategy=row.truncation_strategy,
            tool_choice=row.tool_choice or "auto",
            parallel_tool_calls=row.parallel_tool_calls,
            response_format=row.response_format or "auto",
        )


class RunStepObject(WireModel):
    id: str
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: int
    assistant_id: str
    thread_id: str
    run_id: str
    type: Literal["message_creation", "tool_calls"]
    status: Literal["in_progress", "cancelled", "failed", "completed", "expired"]
    step_details: dict[str, Any]
    last_error: dict[str, Any] | None
    expired_at: int | None
    cancelled_at: int | None
    failed_at: int | None
    completed_at: int | None
    metadata: dict[str, str]
    usage: dict[str, int] | None

    @classmethod
    def from_row(cls, row: RunStep, include_search_content: bool = False) -> "RunStepObject":
        details = row.step_details
        if details.get("type") == "tool_calls":
            details = _without_search_content(details, include_search_content)
        return cls(
            id=row.id,
            created_at=row.created_at,
            assistant_id=row.assistant_id,
            thread_id=row.thread_id,
            run_id=row.run_id,
            type=row.type,  # type: ignore[arg-type]
            status=row.status,  # type: ignore[arg-type]
            step_details=details,
            last_error=row.last_error,
            expired_at=row.expired_at,
            cancelled_at=row.cancelled_at,
            failed_at=row.failed_at,
            completed_at=row.completed_at,
            metadata=row.metadata_,
            usage=row.usage,
        )


def public_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A stored tool call without the private keys (``_arguments``, ``_output``) the executor
    keeps to rebuild the model's context."""
    return {k: v for k, v in call.items() if not k.startswith("_")}


def _without_search_content(details: dict[str, Any], include: bool) -> dict[str, Any]:
    """File search results carry their text only when ``include[]`` asks for it."""
    calls = []
    for call in details.get("tool_calls", []):
        call = public_tool_call(call)
        if not include and call.get("type") == "file_search" and call["file_search"].get("results"):
            results = [{k: v for k, v in r.items() if k != "content"} for r in call["file_search"]["results"]]
            call = {**call, "file_search": {**call["file_search"], "results": results}}
        calls.append(call)
    return {**details, "tool_calls": calls}
