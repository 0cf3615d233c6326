"""The rows the repositories return: frozen, typed, free of asyncpg types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class TenantRecord:
    id: str
    display_name: str
    plan: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: UUID
    tenant_id: str
    namespace: str
    name: str
    prompt: str
    user_id: str | None
    phase: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the store assigns seq and ts."""

    dedupe_key: str | None
    type: str
    level: str = "info"
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunEventRecord:
    run_id: UUID
    seq: int
    tenant_id: str
    type: str
    level: str
    ts: datetime
    payload: dict[str, Any]
    dedupe_key: str | None


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    id: UUID
    tenant_id: str
    run_id: UUID
    step_id: str
    attempt: int
    tool: str
    tool_version: str
    params: dict[str, Any]
    result: Any
    error: str | None
    success: bool | None  # None while the attempt is running
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """An artifact's metadata; the content is returned separately."""

    id: UUID
    tenant_id: str
    run_id: UUID
    step_id: str | None
    title: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    tenant_id: str
    actor: str
    action: str
    target: str
    request_id: str | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KnowledgeDocumentRecord:
    id: UUID
    tenant_id: str
    title: str
    source: str | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KnowledgeHitRecord:
    """One hybrid-search hit. Ranks are 1-based; None when the chunk was not a candidate."""

    document_id: UUID
    chunk_id: UUID
    title: str
    snippet: str
    score: float  # the RRF score
    vector_rank: int | None
    text_rank: int | None
    source: str | None = None
