"""Assistant requests and the ``assistant`` object (``AssistantObject`` in the spec)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from assistantd.api.types import (
    AssistantTools,
    Metadata,
    ModelName,
    ReasoningEffort,
    RequestModel,
    ResponseFormat,
    Temperature,
    ToolResources,
    TopP,
    WireModel,
)
from assistantd.db.models import Assistant


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
    metadata: dict[str, str]
    temperature: float | None
    top_p: float | None
    response_format: Any

    @classmethod
    def from_row(cls, row: Assistant) -> "AssistantObject":
        return cls(
            id=row.id,
            created_at=row.created_at,
            name=row.name,
            description=row.description,
            model=row.model,
            instructions=row.instructions,
            tools=row.tools,
            tool_resources=row.tool_resources,
            metadata=row.metadata_,
            # OpenAI shows the sampling defaults rather than null.
            temperature=1.0 if row.temperature is None else row.temperature,
            top_p=1.0 if row.top_p is None else row.top_p,
            response_format=row.response_format or "auto",
        )
