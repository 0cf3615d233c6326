"""knowledge.search: params and result."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from sba_core.models.base import WireModel


class KnowledgeSearchParams(WireModel):
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    top_k: int = Field(default=5, ge=1, le=50)


class KnowledgeHit(WireModel):
    document_id: str
    chunk_id: str
    title: str
    snippet: str
    score: float


class KnowledgeSearchResult(WireModel):
    query: str
    hits: list[KnowledgeHit] = Field(default_factory=list)
