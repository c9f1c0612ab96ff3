"""Vector store requests and wire objects (``VectorStoreObject``, ``VectorStoreFileObject``,
``VectorStoreFileBatchObject``, search and content pages), each built from rows in one place."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, Union

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool

from assistantd.api.types import (
    LastError,
    Lenient,
    Metadata,
    RequestModel,
    RowMetadata,
    WireModel,
    absent_if_none,
    check_key_value_map,
)
from assistantd.db.models import VectorStore, VectorStoreFileBatch

MAX_STORE_FILES = 500
MAX_BATCH_FILES = 2000
DAY = 86_400


def _check_attributes(value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    check_key_value_map(value, "attributes")
    return dict(value)


AttrValue = Union[StrictBool, int, float, str]
Attributes = Annotated[dict[str, AttrValue] | None, AfterValidator(_check_attributes)]


class ExpiresAfter(Lenient):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


# Chunking strategies are validated by :func:`assistantd.vector_stores.chunking.normalize`
# (OpenAI's wording and params); here they are taken as objects.
ChunkingStrategy = dict[str, Any] | None


class CreateVectorStoreRequest(RequestModel):
    file_ids: list[str] = Field(default_factory=list, max_length=MAX_STORE_FILES)
    name: str | None = None
    description: str | None = Field(default=None, max_length=512)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy = None
    metadata: Metadata = None


class UpdateVectorStoreRequest(RequestModel):
    name: str | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata = None


class CreateVectorStoreFileRequest(RequestModel):
    file_id: str
    chunking_strategy: ChunkingStrategy = None
    attributes: Attributes = None


class BatchFile(CreateVectorStoreFileRequest):
    pass


class CreateVectorStoreFileBatchRequest(RequestModel):
    file_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_FILES)
    files: list[BatchFile] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_FILES)
    chunking_strategy: ChunkingStrategy = None
    attributes: Attributes = None


class UpdateVectorStoreFileAttributesRequest(RequestModel):
    attributes: Attributes


# --- search filters ----------------------------------------------------------------------------

ScalarValue = Union[StrictBool, int, float, str]


class ComparisonFilter(Lenient):
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: str
    value: Union[ScalarValue, list[Union[int, float, str]]]


class CompoundFilter(Lenient):
    type: Literal["and", "or"]
    filters: list[Annotated[Union[ComparisonFilter, "CompoundFilter"], Field(discriminator="type")]]


CompoundFilter.model_rebuild()

Filter = Annotated[Union[ComparisonFilter, CompoundFilter], Field(discriminator="type")]


class SearchRankingOptions(Lenient):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0, le=1)


class VectorStoreSearchRequest(RequestModel):
    query: Union[str, Annotated[list[str], Field(min_length=1)]]
    rewrite_query: bool = False
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: Filter | None = None
    ranking_options: SearchRankingOptions | None = None


# --- wire objects ------------------------------------------------------------------------------

class FileCounts(WireModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0

    @classmethod
    def of(cls, by_status: dict[str, int]) -> "FileCounts":
        counts = {k: by_status.get(k, 0) for k in ("in_progress", "completed", "failed", "cancelled")}
        return cls(**counts, total=sum(counts.values()))


class VectorStoreObject(WireModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: Annotated[str, BeforeValidator(lambda name: name or "")]  # a string in the spec
    # ``description`` and ``expires_after`` are not nullable in the spec: absent when unset.
    description: str | None = absent_if_none()
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: dict[str, Any] | None = absent_if_none()
    expires_at: int | None
    last_active_at: int | None
    metadata: RowMetadata

    @classmethod
    def from_row(cls, row: VectorStore, by_status: dict[str, int], usage_bytes: int,  # type: ignore[override]
                 now: int) -> Self:
        """The store's status and counts come from its files (``by_status``: files per status)."""
        counts = FileCounts.of(by_status)
        if row.expires_at is not None and row.expires_at <= now:
            status = "expired"
        elif counts.in_progress:
            status = "in_progress"
        else:
            status = "completed"
        return super().from_row(row, usage_bytes=usage_bytes, file_counts=counts, status=status)


class VectorStoreFileLastError(LastError):
    code: Literal["server_error", "unsupported_file", "invalid_file"]


class VectorStoreFileObject(WireModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: VectorStoreFileLastError | None
    chunking_strategy: dict[str, Any]
    attributes: Annotated[dict[str, Any], BeforeValidator(lambda attributes: attributes or {})]


class VectorStoreFileBatchObject(WireModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts

    @classmethod
    def from_row(cls, row: VectorStoreFileBatch, by_status: dict[str, int]) -> Self:  # type: ignore[override]
        counts = FileCounts.of(by_status)
        if counts.in_progress:
            status = "in_progress"
        elif row.cancelled:
            status = "cancelled"
        elif counts.total and counts.failed == counts.total:
            status = "failed"
        else:
            status = "completed"
        return super().from_row(row, file_counts=counts, status=status)


class TextContent(WireModel):
    type: Literal["text"] = "text"
    text: str


class SearchResultItem(WireModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    content: list[TextContent]


class SearchResultsPage(WireModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResultItem]
    has_more: bool = False
    next_page: str | None = None


class FileContentPage(WireModel):
    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[TextContent]
    has_more: bool = False
    next_page: str | None = None
