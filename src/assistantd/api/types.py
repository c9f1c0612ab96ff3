"""Wire types shared by several objects: metadata, tools, tool resources, response formats,
lists and deletion receipts. They mirror ``assistants-v2.openapi.yaml`` one to one.

Request models forbid unknown top-level fields (OpenAI answered "Unrecognized request argument
supplied"); a limit broken anywhere is reported with the ``param`` path that broke it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar, Union

from fastapi import Request, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Limits from the spec (ENDPOINTS.md §5 and the object schemas).
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512
MAX_ASSISTANT_TOOLS = 128
MAX_RUN_TOOLS = 20
MAX_CODE_INTERPRETER_FILES = 20
MAX_VECTOR_STORES_PER_RESOURCE = 1
# Files a ``vector_stores`` helper may start its store with. The spec allows 100,000,000; we keep
# the spec's own bound for making a store directly (CreateVectorStoreRequest.file_ids): each file
# is a row written in the request, and a database takes ~32k ids in one lookup at most.
MAX_HELPER_FILES = 500
BUILTIN_TOOL_NAMES = ("code_interpreter", "file_search")

_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def openai_error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown to the client as written."""
    return PydanticCustomError("openai", message)


def check_key_value_map(value: dict[str, Any], name: str) -> None:
    """The spec's rule for ``metadata`` and vector-store file ``attributes``: at most 16 pairs,
    keys up to 64 characters, string values up to 512."""
    if len(value) > METADATA_MAX_PAIRS:
        raise openai_error(
            f"Invalid '{name}': too many properties. Expected an object with at most "
            f"{METADATA_MAX_PAIRS} properties, but got an object with {len(value)} properties instead."
        )
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY:
            raise openai_error(
                f"Invalid '{name}': key '{key[:80]}' is too long. Expected a key with at most "
                f"{METADATA_MAX_KEY} characters, but got {len(key)} characters instead."
            )
        if isinstance(item, str) and len(item) > METADATA_MAX_VALUE:
            raise openai_error(
                f"Invalid '{name}.{key}': string too long. Expected a string with maximum length "
                f"{METADATA_MAX_VALUE}, but got a string with length {len(item)} instead."
            )


def _check_metadata(value: dict[str, str | None] | None) -> dict[str, str]:
    if value is None:
        return {}
    check_key_value_map(value, "metadata")
    # A null value stores nothing for that key (metadata values on the wire are strings).
    return {k: v for k, v in value.items() if v is not None}


Metadata = Annotated[dict[str, str | None] | None, AfterValidator(_check_metadata)]


# Request models are strict: OpenAI answered 400 to ``true`` for a number, ``"yes"`` or ``1`` for
# a boolean and ``"1"`` for an integer, where pydantic's lax mode would coerce them.
class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Lenient(BaseModel):
    """Nested request objects: OpenAI ignored fields it did not know inside them."""

    model_config = ConfigDict(extra="ignore", strict=True)


# Integers a request may give: what a database ``INTEGER`` column holds.
MAX_INT32 = 2**31 - 1
ModelName = Annotated[str, Field(min_length=1)]


# --- tools -------------------------------------------------------------------------------------

class RankingOptions(Lenient):
    ranker: Literal["auto", "default_2024_08_21"] = "auto"
    score_threshold: float = Field(ge=0, le=1)


class FileSearchSettings(Lenient):
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: RankingOptions | None = None


class FunctionDefinition(Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _FUNCTION_NAME.match(name):
            raise openai_error(
                f"Invalid 'tools.function.name': string does not match pattern. Expected a "
                f"string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', got '{name}'."
            )
        if name in BUILTIN_TOOL_NAMES:
            raise openai_error(
                f"Invalid 'tools.function.name': '{name}' is reserved for the built-in "
                f"{name} tool; give your function another name."
            )
        return name


class CodeInterpreterTool(Lenient):
    type: Literal["code_interpreter"]


class FileSearchTool(Lenient):
    type: Literal["file_search"]
    file_search: FileSearchSettings | None = None


class FunctionTool(Lenient):
    type: Literal["function"]
    function: FunctionDefinition


Tool = Annotated[Union[CodeInterpreterTool, FileSearchTool, FunctionTool], Field(discriminator="type")]


def _check_tools(tools: list[Any]) -> list[Any]:
    seen: set[str] = set()
    for tool in tools:
        if isinstance(tool, FunctionTool):
            name = tool.function.name
            if name in seen:
                raise openai_error(f"Invalid 'tools': duplicate function name '{name}'.")
            seen.add(name)
    return tools


AssistantTools = Annotated[list[Tool], Field(max_length=MAX_ASSISTANT_TOOLS), AfterValidator(_check_tools)]
RunTools = Annotated[list[Tool], Field(max_length=MAX_RUN_TOOLS), AfterValidator(_check_tools)]


def dump_tools(tools: list[Any] | None) -> list[dict[str, Any]]:
    return [t.model_dump(exclude_none=True) for t in tools or []]


# --- tool resources ----------------------------------------------------------------------------

class CodeInterpreterResources(Lenient):
    file_ids: list[str] = Field(default_factory=list, max_length=MAX_CODE_INTERPRETER_FILES)


class VectorStoreHelper(Lenient):
    """``tool_resources.file_search.vector_stores[]``: make a vector store on the fly."""

    file_ids: list[str] = Field(default_factory=list, max_length=MAX_HELPER_FILES)
    chunking_strategy: dict[str, Any] | None = None
    metadata: Metadata = None


class FileSearchResources(Lenient):
    vector_store_ids: list[str] | None = Field(default=None, max_length=MAX_VECTOR_STORES_PER_RESOURCE)
    vector_stores: list[VectorStoreHelper] | None = Field(
        default=None, max_length=MAX_VECTOR_STORES_PER_RESOURCE
    )


class ToolResources(Lenient):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


# --- response format ---------------------------------------------------------------------------

class ResponseFormatText(Lenient):
    type: Literal["text"]


class ResponseFormatJsonObject(Lenient):
    type: Literal["json_object"]


class JsonSchemaFormat(Lenient):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJsonSchema(Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Union[
    Literal["auto"],
    Annotated[
        Union[ResponseFormatText, ResponseFormatJsonObject, ResponseFormatJsonSchema],
        Field(discriminator="type"),
    ],
]


def dump_response_format(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return value.model_dump(by_alias=True, exclude_none=True)


Temperature = Annotated[float | None, Field(ge=0, le=2)]
TopP = Annotated[float | None, Field(ge=0, le=1)]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None


# --- responses ---------------------------------------------------------------------------------

def _is_none(value: Any) -> bool:
    return value is None


def absent_if_none() -> Any:
    """A field the spec types as optional but not nullable (a file's ``expires_at``, an image's
    ``detail``): left out, not sent as null, when it has no value."""
    return Field(default=None, exclude_if=_is_none)


def _sampling_default(value: Any) -> Any:
    return 1.0 if value is None else value


def _auto_when_unset(value: Any) -> Any:
    return value or "auto"


# The spec's ``oneOf`` of objects told apart by their ``type``: validated by that tag, and
# serialised by each value's own class (pydantic's union serializer first matches the value
# against the choices: measured, a quarter of the time a stream delta takes to serialise).
U = TypeVar("U")
OneOf = SerializeAsAny[Annotated[U, Discriminator("type")]]

# OpenAI shows the sampling defaults (1) and "auto" for an unset choice rather than null.
Sampling = Annotated[float | None, BeforeValidator(_sampling_default)]
AutoWhenUnset = Annotated[Any, BeforeValidator(_auto_when_unset)]
# The ``metadata`` of a row: its column is ``metadata_`` (``metadata`` is SQLAlchemy's own).
RowMetadata = Annotated[dict[str, str], Field(validation_alias="metadata_")]


class _RowWith:
    """A row seen with a few more attributes: values an object derives from other rows."""

    __slots__ = ("_row", "_values")

    def __init__(self, row: Any, values: dict[str, Any]) -> None:
        self._row, self._values = row, values

    def __getattr__(self, name: str) -> Any:
        return self._values[name] if name in self._values else getattr(self._row, name)


class WirePart(BaseModel):
    """A part of a wire object: a tool call, a content part, an error, a usage count.

    Parsed from the stored JSON of a row, which may hold keys the wire never shows (the
    executor's ``_``-prefixed bookkeeping inside tool calls): unknown keys are dropped.
    """

    model_config = ConfigDict(extra="ignore")


class LastError(WirePart):
    """``last_error`` of a run, a run step or a vector store file; each narrows ``code`` to the
    spec's values for it."""

    code: str
    message: str


class WireModel(BaseModel):
    """A response object. Serialised once, here, with the spec's field names and nulls kept
    (fields marked :func:`absent_if_none` apart).

    ``from_row`` builds one from its row by attribute name (``model_validate(row,
    from_attributes=True)``): a field's validators, not a copy per field, say what differs.
    """

    model_config = ConfigDict(populate_by_name=True)

    # Every field (but ``object``) is a column of the row's mapped class, read by the column's
    # attribute name: ``from_row`` may then validate the row's loaded values (its instance dict)
    # rather than read each through SQLAlchemy's attribute descriptor, 3× the cost (9 µs against
    # 3 µs for a run, timed warm; a streamed run emits ~7 such events). Pinned per class by
    # tests/unit/test_wire.py.
    ROW_FIELDS_ARE_COLUMNS: ClassVar[bool] = False

    @classmethod
    def from_row(cls, row: Any, **derived: Any) -> Self:
        """The object of ``row``; ``derived`` gives the fields no column holds."""
        if cls.ROW_FIELDS_ARE_COLUMNS:
            try:
                return cls.model_validate({**row.__dict__, **derived} if derived else row.__dict__)
            except ValidationError:  # a column not loaded: read as attributes, which load it or say why
                pass
        return cls.model_validate(_RowWith(row, derived) if derived else row, from_attributes=True)

    def response(self) -> Response:
        return Response(self.model_dump_json(by_alias=True), media_type="application/json")

    def polled_response(self, request: Request) -> Response:
        """:meth:`response` of an object clients poll until it is done (a run, a vector store, its
        files and batches): ``openai-poll-after-ms`` says how long the SDKs' ``*_and_poll`` helpers
        wait before asking again (``ASSISTANTD_POLL_AFTER_MS``; without it they wait 1 s)."""
        response = self.response()
        if wait := request.app.state.settings.poll_after_ms:
            response.headers["openai-poll-after-ms"] = str(wait)
        return response


class WireDelta(WireModel):
    """A stream delta (``thread.message.delta``, ``thread.run.step.delta``): it carries only
    what changed, so a field it was not given is left out rather than sent as null (a
    function's first delta says ``"output": null``; the ones after it say nothing of it).

    Deltas are built on the stream's hot path, once per token: a subclass's constructors
    validate one nested dict (``__pydantic_validator__.validate_python``, pydantic's fastest
    way to build nested models; ``model_construct`` took twice as long).
    """

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("exclude_unset", True)
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("exclude_unset", True)
        # pydantic-core's serializer itself: BaseModel.model_dump_json only forwards to it.
        return self.__pydantic_serializer__.to_json(self, **kwargs).decode()


class DeltaPart(WirePart):
    """An element of a list in a stream delta: ``index`` says which element of the object's
    list (content parts, tool calls, outputs) it adds to."""

    index: int


T = TypeVar("T", bound=WireModel)


class ListResponse(WireModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: list[T], has_more: bool) -> "ListResponse[T]":
        return cls(
            data=data,
            first_id=data[0].id if data else None,  # type: ignore[attr-defined]
            last_id=data[-1].id if data else None,  # type: ignore[attr-defined]
            has_more=has_more,
        )


class Deleted(WireModel):
    id: str
    object: str
    deleted: bool = True
