from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentmesh.shared.fields import NotNull
from agentmesh.shared.pagination import Page

Status = Literal["pending", "indexing", "ready", "failed"]
SearchMode = Literal["vector", "keyword", "hybrid"]


class KnowledgeBaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    chunk_size: int = Field(default=800, ge=100, le=8000, description="Characters per chunk")
    chunk_overlap: int = Field(default=100, ge=0, le=2000)
    embedding_provider_id: uuid.UUID | None = Field(
        default=None, description="An OpenAI-compatible provider of yours; none: the local model"
    )
    embedding_model: str | None = Field(
        default=None, max_length=200, description="Default: all-MiniLM-L6-v2 (local)"
    )
    dimension: int = Field(default=384, description="Vector size; 384 in this deployment")

    @model_validator(mode="after")
    def _overlap(self) -> KnowledgeBaseCreate:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class KnowledgeBaseUpdate(BaseModel):
    """A partial update. Changing the embedding model or the chunking re-indexes every
    document (a model change first removes the old vectors: never mixed vectors)."""

    model_config = ConfigDict(extra="forbid")

    name: str = NotNull(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    chunk_size: int = NotNull(ge=100, le=8000)
    chunk_overlap: int = NotNull(ge=0, le=2000)
    embedding_provider_id: uuid.UUID | None = Field(
        default=None, description="``null``: back to the local model"
    )
    embedding_model: str | None = Field(
        default=None, max_length=200, description="``null``: the provider's default model"
    )


class KnowledgeBaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID = Field(description="Who created it")
    workspace_id: uuid.UUID
    name: str
    description: str | None
    embedding_provider_id: uuid.UUID | None
    embedding_model: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    created_at: datetime


class KnowledgeBasePage(Page[KnowledgeBaseOut]):
    pass


class TextDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=5_000_000)
    filename: str = Field(default="text.md", min_length=1, max_length=255)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentOut(BaseModel):
    id: uuid.UUID
    knowledge_base_id: uuid.UUID
    filename: str
    content_type: str
    size_bytes: int
    status: Status
    error: str | None
    chunk_count: int
    chunks_done: int = Field(description="Chunks embedded so far (progress while indexing)")
    chunks_total: int | None = Field(
        description="Chunks the document splits into; null until its text is split"
    )
    metadata: dict[str, Any]
    duplicate: bool = Field(default=False, description="Same content was already here")
    created_at: datetime
    updated_at: datetime


class DocumentPage(Page[DocumentOut]):
    pass


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=5, ge=1, le=50)
    mode: SearchMode = "hybrid"
    filter: dict[str, Any] = Field(
        default_factory=dict, description="Document metadata that must match exactly"
    )


class SearchHit(BaseModel):
    chunk_id: int
    document_id: uuid.UUID
    filename: str
    position: int
    content: str
    headings: dict[str, Any]
    score: float


class SearchResponse(BaseModel):
    mode: str
    results: list[SearchHit]
