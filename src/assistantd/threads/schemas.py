"""Thread and message requests; the ``thread`` and ``thread.message`` objects with their typed
content parts, and the ``thread.message.delta`` events a run streams."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Self, Union

import orjson
from pydantic import Field

from assistantd.api.types import (
    DeltaPart,
    Lenient,
    Metadata,
    OneOf,
    RequestModel,
    RowMetadata,
    ToolResources,
    WireDelta,
    WireModel,
    WirePart,
    absent_if_none,
)


# --- message content parts ---------------------------------------------------------------------
# Image parts are the same in a request and in a message (the spec's MessageContentImageFileObject
# and MessageContentImageUrlObject); a request's text part is a string, a message's has annotations.

ImageDetail = Literal["auto", "low", "high"]


class ImageFile(Lenient):
    file_id: str
    detail: ImageDetail | None = absent_if_none()


class ImageFilePart(Lenient):
    type: Literal["image_file"]
    image_file: ImageFile


class ImageUrl(Lenient):
    url: str
    detail: ImageDetail | None = absent_if_none()


class ImageUrlPart(Lenient):
    type: Literal["image_url"]
    image_url: ImageUrl


class TextPart(Lenient):
    type: Literal["text"]
    text: str


ContentPart = Annotated[Union[ImageFilePart, ImageUrlPart, TextPart], Field(discriminator="type")]


class FileCitation(WirePart):
    file_id: str


class FileCitationAnnotation(WirePart):
    """A ``【i:j†name】`` marker the model copied from a file search result."""

    type: Literal["file_citation"] = "file_citation"
    text: str
    start_index: int
    end_index: int
    file_citation: FileCitation


class FilePath(WirePart):
    file_id: str


class FilePathAnnotation(WirePart):
    """A ``sandbox:/mnt/data/...`` link to a file the run's code wrote."""

    type: Literal["file_path"] = "file_path"
    text: str
    start_index: int
    end_index: int
    file_path: FilePath


Annotation = OneOf[Union[FileCitationAnnotation, FilePathAnnotation]]


class Text(WirePart):
    value: str
    annotations: list[Annotation]


class TextContent(WirePart):
    type: Literal["text"] = "text"
    text: Text


MessageContent = OneOf[Union[ImageFilePart, ImageUrlPart, TextContent]]


class AttachmentTool(Lenient):
    type: Literal["code_interpreter", "file_search"]


class Attachment(Lenient):
    """A file given to a message's tools; a message shows its attachments as they were given."""

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

class MessageIncompleteDetails(WirePart):
    """Why the message ended before the model finished it."""

    reason: Literal["content_filter", "max_tokens", "run_cancelled", "run_expired", "run_failed"]


class ThreadObject(WireModel):
    id: str
    object: Literal["thread"] = "thread"
    created_at: int
    tool_resources: dict[str, Any] | None
    metadata: RowMetadata


class MessageObject(WireModel):
    ROW_FIELDS_ARE_COLUMNS = True

    id: str
    object: Literal["thread.message"] = "thread.message"
    created_at: int
    thread_id: str
    status: Literal["in_progress", "incomplete", "completed"]
    incomplete_details: MessageIncompleteDetails | None
    completed_at: int | None
    incomplete_at: int | None
    role: Literal["user", "assistant"]
    content: list[MessageContent]
    assistant_id: str | None
    run_id: str | None
    attachments: list[Attachment]
    metadata: RowMetadata


# --- stream deltas -----------------------------------------------------------------------------

class FileCitationDeltaAnnotation(DeltaPart, FileCitationAnnotation):
    pass


class FilePathDeltaAnnotation(DeltaPart, FilePathAnnotation):
    pass


AnnotationDelta = OneOf[Union[FileCitationDeltaAnnotation, FilePathDeltaAnnotation]]


class TextDelta(WirePart):
    """Text appended to a text part (its annotations come with the completed message)."""

    value: str | None = None
    annotations: list[AnnotationDelta] | None = None


class TextDeltaBlock(DeltaPart):
    type: Literal["text"]
    text: TextDelta | None = None


class ImageFileDelta(WirePart):
    file_id: str | None = None
    detail: ImageDetail | None = None


class ImageFileDeltaBlock(DeltaPart):
    type: Literal["image_file"]
    image_file: ImageFileDelta | None = None


MessageContentDelta = OneOf[Union[ImageFileDeltaBlock, TextDeltaBlock]]


class MessageDelta(WirePart):
    role: Literal["user", "assistant"] | None = None
    content: list[MessageContentDelta] | None = None


class MessageDeltaEvent(WireDelta):
    """``thread.message.delta``: text the model just wrote, streamed as it comes."""

    id: str
    object: Literal["thread.message.delta"]
    delta: MessageDelta

    @classmethod
    def text(cls, message_id: str, index: int, value: str) -> Self:
        """``value`` appended to the text part at ``index`` of the message's content."""
        return cls.__pydantic_validator__.validate_python({
            "id": message_id, "object": "thread.message.delta",
            "delta": {"content": [{"index": index, "type": "text", "text": {"value": value, "annotations": []}}]}})


class TextDeltaJSON:
    """The JSON text of ``MessageDeltaEvent.text(message_id, index, value)`` for any ``value``,
    cut once from that model's own JSON around a marker: a streamed token then costs one string
    encoding and a concatenation instead of a model's validation and serialisation (the stream's
    per-token path). The model's JSON is made once per ``index``, with a marker for the message's
    id too, which each message then puts in. tests/unit/test_wire.py pins it to the model's JSON."""

    __slots__ = ("head", "tail")
    _MARK = "@@assistantd-text-delta@@"
    _ID_MARK = "@@assistantd-message-id@@"

    def __init__(self, message_id: str, index: int) -> None:
        head, self.tail = self._cut(index)
        self.head = head.replace(f'"{self._ID_MARK}"', orjson.dumps(message_id).decode(), 1)

    @classmethod
    @functools.cache
    def _cut(cls, index: int) -> tuple[str, str]:
        whole = MessageDeltaEvent.text(cls._ID_MARK, index, cls._MARK).model_dump_json(by_alias=True)
        head, _, tail = whole.partition(f'"{cls._MARK}"')
        if f'"{cls._ID_MARK}"' not in head:  # (the id comes before the text in the model's JSON)
            raise AssertionError("TextDeltaJSON: the message id is not before the text")
        return head, tail

    def __call__(self, value: str) -> str:
        return self.head + orjson.dumps(value).decode() + self.tail
