"""Thread and message requests, and the ``thread`` and ``thread.message`` objects."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from assistantd.api.types import Lenient, Metadata, RequestModel, ToolResources, WireModel
from assistantd.db.models import Message, Thread


# --- message content parts (request side) ------------------------------------------------------

class ImageFile(Lenient):
    file_id: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageFilePart(Lenient):
    type: Literal["image_file"]
    image_file: ImageFile


class ImageUrl(Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(Lenient):
    type: Literal["image_url"]
    image_url: ImageUrl


class TextPart(Lenient):
    type: Literal["text"]
    text: str


ContentPart = Annotated[Union[ImageFilePart, ImageUrlPart, TextPart], Field(discriminator="type")]


class AttachmentTool(Lenient):
    type: Literal["code_interpreter", "file_search"]


class Attachment(Lenient):
    file_id: str
    tools: list[AttachmentTool] = Field(default_factory=list)


class CreateMessageRequest(RequestModel):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[ContentPart], Field(min_length=1)]
    attachments: list[Attachment] | None = None
    metadata: Metadata = None


class ModifyMessageRequest(RequestModel):
    metadata: Metadata = None


class CreateThreadRequest(RequestModel):
    messages: list[CreateMessageRequest] = Field(default_factory=list)
    tool_resources: ToolResources | None = None
    metadata: Metadata = None


class ModifyThreadRequest(RequestModel):
    tool_resources: ToolResources | None = None
    metadata: Metadata = None


def content_parts(content: str | list[Any]) -> list[dict[str, Any]]:
    """Request content (a string or parts) → the stored, wire form of message content."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": {"value": part.text, "annotations": []}})
        else:
            parts.append(part.model_dump(exclude_none=True))
    return parts


# --- objects -----------------------------------------------------------------------------------

class ThreadObject(WireModel):
    id: str
    object: Literal["thread"] = "thread"
    created_at: int
    tool_resources: dict[str, Any] | None
    metadata: dict[str, str]

    @classmethod
    def from_row(cls, row: Thread) -> "ThreadObject":
        return cls(id=row.id, created_at=row.created_at, tool_resources=row.tool_resources,
                   metadata=row.metadata_)


class MessageObject(WireModel):
    id: str
    object: Literal["thread.message"] = "thread.message"
    created_at: int
    thread_id: str
    status: Literal["in_progress", "incomplete", "completed"]
    incomplete_details: dict[str, Any] | None
    completed_at: int | None
    incomplete_at: int | None
    role: Literal["user", "assistant"]
    content: list[dict[str, Any]]
    assistant_id: str | None
    run_id: str | None
    attachments: list[dict[str, Any]]
    metadata: dict[str, str]

    @classmethod
    def from_row(cls, row: Message) -> "MessageObject":
        return cls(
            id=row.id,
            created_at=row.created_at,
            thread_id=row.thread_id,
            status=row.status,  # type: ignore[arg-type]
            incomplete_details=row.incomplete_details,
            completed_at=row.completed_at,
            incomplete_at=row.incomplete_at,
            role=row.role,  # type: ignore[arg-type]
            content=row.content,
            assistant_id=row.assistant_id,
            run_id=row.run_id,
            attachments=row.attachments,
            metadata=row.metadata_,
        )
