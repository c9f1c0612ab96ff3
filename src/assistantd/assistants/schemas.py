"""Assistant requests and the ``assistant`` object (``AssistantObject`` in the spec)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assistantd.api.types import (
    AssistantTools,
    AutoWhenUnset,
    Metadata,
    ModelName,
    ReasoningEffort,
    RequestModel,
    ResponseFormat,
    RowMetadata,
    Sampling,
    Temperature,
    ToolResources,
    TopP,
    WireModel,
)


class CreateAssistantRequest(RequestModel):
    model: ModelName
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256_000)
    reasoning_effort: ReasoningEffort = None
    tools: AssistantTools = Field(default_factory=list)
    tool_resources: ToolResources | None = None
    metadata: Metadata = None
    temperature: Temperature = None
    top_p: TopP = None
    response_format: ResponseFormat | None = None


class ModifyAssistantRequest(CreateAssistantRequest):
    model: ModelName | None = None  # type: ignore[assignment]


class AssistantObject(WireModel):
    id: str
    object: Literal["assistant"] = "assistant"
    created_at: int
    name: str | None
    description: str | None
    model: str
    instructions: str | None
    tools: list[dict[str, Any]]
    tool_resources: dict[str, Any] | None
    metadata: RowMetadata
    temperature: Sampling
    top_p: Sampling
    response_format: AutoWhenUnset
