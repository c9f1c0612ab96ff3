"""Run and run-step requests; the ``thread.run`` and ``thread.run.step`` objects with their typed
parts (step details, tool calls, ``last_error``, ``usage``, ``required_action``), and the
``thread.run.step.delta`` events a run streams. They mirror openai-python's ``types/beta/threads``.
"""

from __future__ import annotations

from typing import Any, Literal, Self, Union

from pydantic import Field, model_validator

from assistantd.api.types import (
    AutoWhenUnset,
    LastError,
    Lenient,
    MAX_INT32,
    Metadata,
    ModelName,
    OneOf,
    ReasoningEffort,
    RequestModel,
    ResponseFormat,
    RowMetadata,
    RunTools,
    Sampling,
    Temperature,
    ToolResources,
    TopP,
    WireDelta,
    WireModel,
    WirePart,
)
from assistantd.db.models import RunStep
from assistantd.runs.states import ACTIVE
from assistantd.threads.schemas import CreateMessageRequest, CreateThreadRequest
from assistantd.tools.schemas import (
    FileSearchToolCall,
    ToolCall,
    ToolCallDelta,
)

# Statuses (ENDPOINTS.md §1).


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


# --- parts of runs and run steps ----------------------------------------------------------------

class Usage(WirePart):
    """Tokens used: by a run over all its model turns, by a step in its one turn."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunLastError(LastError):
    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]


class RunStepLastError(LastError):
    code: Literal["server_error", "rate_limit_exceeded"]


class RunIncompleteDetails(WirePart):
    """Which token limit ended the run."""

    reason: Literal["max_completion_tokens", "max_prompt_tokens"] | None = None


class RequiredFunction(WirePart):
    name: str
    arguments: str


class RequiredToolCall(WirePart):
    """A function call the run waits for the output of (``RunToolCallObject``)."""

    id: str
    type: Literal["function"] = "function"
    function: RequiredFunction


class SubmitToolOutputs(WirePart):
    tool_calls: list[RequiredToolCall]


class RequiredAction(WirePart):
    """What a run in ``requires_action`` waits for: the outputs of these function calls."""

    type: Literal["submit_tool_outputs"] = "submit_tool_outputs"
    submit_tool_outputs: SubmitToolOutputs

    @classmethod
    def for_calls(cls, calls: list[dict[str, Any]]) -> "RequiredAction":
        """The outputs of these function calls (as a ``tool_calls`` step holds them)."""
        return cls(submit_tool_outputs=SubmitToolOutputs(tool_calls=[
            RequiredToolCall(id=c["id"], function=RequiredFunction(name=c["function"]["name"],
                                                                   arguments=c["function"]["arguments"]))
            for c in calls]))


class MessageCreation(WirePart):
    message_id: str


class MessageCreationStepDetails(WirePart):
    """The step in which the assistant wrote a message."""

    type: Literal["message_creation"] = "message_creation"
    message_creation: MessageCreation


class ToolCallsStepDetails(WirePart):
    """The step in which the model called tools, each call with its result once it has one."""

    type: Literal["tool_calls"] = "tool_calls"
    tool_calls: list[ToolCall]

    def hide_search_content(self) -> None:
        for call in self.tool_calls:
            if isinstance(call, FileSearchToolCall):
                for result in call.file_search.results or ():
                    result.content = None


StepDetails = OneOf[Union[MessageCreationStepDetails, ToolCallsStepDetails]]


# --- objects -----------------------------------------------------------------------------------

RunStatus = Literal["queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed",
                    "completed", "incomplete", "expired"]


class RunObject(WireModel):
    ROW_FIELDS_ARE_COLUMNS = True

    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: RunStatus
    required_action: RequiredAction | None
    last_error: RunLastError | None
    expires_at: int | None
    started_at: int | None
    cancelled_at: int | None
    failed_at: int | None
    completed_at: int | None
    incomplete_details: RunIncompleteDetails | None
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    metadata: RowMetadata
    usage: Usage | None
    temperature: Sampling
    top_p: Sampling
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    truncation_strategy: dict[str, Any] | None
    tool_choice: AutoWhenUnset
    parallel_tool_calls: bool
    response_format: AutoWhenUnset

    @model_validator(mode="after")
    def _nothing_expires_once_ended(self) -> Self:
        # Once a run has ended nothing can expire any more; OpenAI showed null then.
        if self.status not in ACTIVE:
            self.expires_at = None
        return self


class RunStepObject(WireModel):
    ROW_FIELDS_ARE_COLUMNS = True

    id: str
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: int
    assistant_id: str
    thread_id: str
    run_id: str
    type: Literal["message_creation", "tool_calls"]
    status: Literal["in_progress", "cancelled", "failed", "completed", "expired"]
    step_details: StepDetails
    last_error: RunStepLastError | None
    expired_at: int | None
    cancelled_at: int | None
    failed_at: int | None
    completed_at: int | None
    metadata: RowMetadata
    usage: Usage | None

    @classmethod
    def from_row(cls, row: RunStep, include_search_content: bool = False) -> Self:  # type: ignore[override]
        """File search results carry their passages only when ``include[]`` asks for them."""
        step = super().from_row(row)
        if not include_search_content and isinstance(step.step_details, ToolCallsStepDetails):
            step.step_details.hide_search_content()
        return step


# --- stream deltas -----------------------------------------------------------------------------

class ToolCallsDelta(WirePart):
    type: Literal["tool_calls"]
    tool_calls: list[ToolCallDelta] | None = None


class MessageCreationDelta(WirePart):
    type: Literal["message_creation"]
    message_creation: MessageCreation | None = None


class RunStepDelta(WirePart):
    step_details: OneOf[Union[MessageCreationDelta, ToolCallsDelta]] | None = None


class RunStepDeltaEvent(WireDelta):
    """``thread.run.step.delta``: a tool call of the step appears, or grows.

    Built by :meth:`tool_call`, once per upstream chunk on the stream's hot path.
    """

    id: str
    object: Literal["thread.run.step.delta"]
    delta: RunStepDelta

    @classmethod
    def tool_call(cls, step_id: str, index: int, kind: str, body: dict[str, Any], call_id: str | None = None) -> Self:
        """More of the step's ``index``-th tool call: ``body`` under its ``kind`` (what the tool
        says: ``tools.base.Tool.opening`` / ``input_delta`` / what it streams), its id in its
        first delta only."""
        call: dict[str, Any] = {"index": index, "type": kind}
        if call_id is not None:
            call["id"] = call_id
        call[kind] = body
        return cls.__pydantic_validator__.validate_python(
            {"id": step_id, "object": "thread.run.step.delta",
             "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}})
