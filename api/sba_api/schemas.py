"""Request and response bodies of the HTTP API.

These models are the one source of the handlers' parsing, their responses and
the OpenAPI document (see `sba_api.routes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sba_core.models.base import WireModel
from sba_core.models.run import (
    AgentRunSpec,
    Condition,
    DnsLabel,
    RunResult,
    RunUsage,
    StepStatus,
)
from sba_core.tools.contracts import KnowledgeSearchResult

__all__ = [
    "AgentRunSpec",
    "ArtifactList",
    "ArtifactUploaded",
    "ArtifactView",
    "ErrorBody",
    "ErrorDetail",
    "ErrorInfo",
    "EventsQuery",
    "Health",
    "KnowledgeDocumentCreated",
    "KnowledgeDocumentIn",
    "KnowledgeSearchIn",
    "KnowledgeSearchResult",
    "RunCreated",
    "RunLinks",
    "RunList",
    "RunListQuery",
    "RunSummary",
    "RunView",
    "StepInput",
    "StepResultIn",
    "StepResultRecorded",
    "ToolCatalog",
    "ToolInfo",
]


# --- errors -----------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loc: str = Field(description="Dotted camelCase path of the offending field; '' for the body.")
    msg: str


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable machine-readable code, e.g. `validation_error`.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str = Field(description="Also sent as the X-Request-ID header.")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorInfo


# --- runs -------------------------------------------------------------------------------


class RunLinks(WireModel):
    self_: str = Field(alias="self")
    events: str
    artifacts: str


class RunCreated(WireModel):
    id: str = Field(description="The run's id (the AgentRun's metadata.uid).")
    name: str
    namespace: str
    tenant: str
    phase: str
    links: RunLinks


class RunView(WireModel):
    id: str
    name: str
    namespace: str
    tenant: str
    prompt: str
    user: str | None = None
    phase: str
    current_step: str | None = None
    steps: list[StepStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    usage: RunUsage | None = None
    result: RunResult | None = None
    reason: str | None = None
    message: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    source: Literal["cluster", "database"] = Field(
        description="`cluster` when read from the live AgentRun; `database` when the AgentRun "
        "is gone or the cluster cannot be reached."
    )
    links: RunLinks


class RunSummary(WireModel):
    id: str
    name: str
    namespace: str
    tenant: str
    phase: str
    prompt: str
    user: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    links: RunLinks


class RunList(WireModel):
    items: list[RunSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


# --- artifacts --------------------------------------------------------------------------


class ArtifactView(WireModel):
    id: str
    run_id: str
    step_id: str | None = None
    title: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime
    download: str = Field(description="Path that returns the content.")


class ArtifactList(WireModel):
    items: list[ArtifactView]


# --- knowledge --------------------------------------------------------------------------


class KnowledgeDocumentIn(WireModel):
    tenant: DnsLabel
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    content: Annotated[str, StringConstraints(min_length=1, max_length=2_000_000)]
    source: Annotated[str, StringConstraints(max_length=2000)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class KnowledgeDocumentCreated(WireModel):
    id: str
    chunks: int


class KnowledgeSearchIn(WireModel):
    tenant: DnsLabel
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    top_k: int = Field(default=5, ge=1, le=50)


# --- tools and health -------------------------------------------------------------------


class ToolInfo(WireModel):
    name: str
    version: str
    description: str
    side_effect: bool
    scopes: list[str]
    cost_estimate: int
    params_schema: dict[str, Any]
    result_schema: dict[str, Any]


class ToolCatalog(WireModel):
    items: list[ToolInfo]


class Health(WireModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# --- internal tool gateway --------------------------------------------------------------


class StepInput(WireModel):
    run_id: str
    tenant: str
    step_id: str
    attempt: int
    tool: str
    params: dict[str, Any]
    inputs: dict[str, Any] = Field(
        description="Result of the latest successful call of each other step of the run."
    )


class StepResultIn(WireModel):
    success: bool
    result: dict[str, Any] | None = None
    error: Annotated[str, StringConstraints(max_length=4000)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> StepResultIn:
        if self.success and self.result is None:
            raise ValueError("a successful step must carry a result")
        if not self.success and not self.error:
            raise ValueError("a failed step must carry an error")
        return self


class StepResultRecorded(WireModel):
    call_id: str
    recorded: bool


class ArtifactUploaded(WireModel):
    artifact_id: str
    title: str
    content_type: str
    size_bytes: int
    sha256: str


# --- query strings ----------------------------------------------------------------------


class RunListQuery(WireModel):
    tenant: DnsLabel
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Annotated[str, StringConstraints(max_length=512)] | None = None


class EventsQuery(WireModel):
    last_event_id: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None,
        description="Resume after this event id (for clients that cannot set headers).",
    )
