"""Request and response bodies of the HTTP API.

These models are the one source of the handlers' parsing, their responses and
the OpenAPI document (see `sba_api.routes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sba_core.models.approval import ApprovalPolicy, Decision
from sba_core.models.base import WireModel
from sba_core.models.run import (
    MAX_INPUT_CHARS,
    Condition,
    DnsLabel,
    RunRequest,
    RunResult,
    RunUsage,
    StepId,
    StepStatus,
)
from sba_core.models.tenant import TenantSpec
from sba_core.tools.contracts import KnowledgeSearchResult, StepConfig

__all__ = [
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
    "RunRequest",
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


# --- run actions: approve, cancel, continue ---------------------------------------------


class ApprovalAnswer(WireModel):
    """The answer itself. `actor` and `ts` are refused: they come from the bearer token
    and the server clock."""

    status: Decision = Field(description="`approved` or `denied`.")
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


class ApprovalIn(WireModel):
    """Seed 000's approval payload, without `actor` and `ts`."""

    run_id: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="Optional; must be the run in the path when given."
    )
    step_id: StepId = Field(description="The step awaiting approval.")
    approval: ApprovalAnswer


class ApprovalLinks(WireModel):
    self_: str = Field(alias="self", description="Poll this for the outcome.")
    run: str
    events: str


class ApprovalView(WireModel):
    """An answer recorded as an `Approval` resource, and what the operator made of it."""

    name: str = Field(description="The Approval resource's name (in the run's namespace).")
    run_id: str
    step_id: str
    decision: Decision
    reason: str | None = None
    actor: str = Field(description="The approver: the bearer token's user.")
    groups: list[str] = Field(default_factory=list)
    ts: datetime | None = Field(
        default=None, description="The API server's clock: the Approval's creationTimestamp."
    )
    outcome: Literal["accepted", "rejected", "pending"] = Field(
        description="`pending` until the operator has processed the Approval."
    )
    outcome_reason: str | None = Field(
        default=None, description="`Accepted`, or why it was rejected (e.g. AlreadyAnswered)."
    )
    message: str | None = None
    links: ApprovalLinks


class CancelIn(WireModel):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class ContinueIn(WireModel):
    step_id: StepId = Field(description="The `user.input` step waiting for input.")
    input: Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)] = Field(
        description="Becomes the step's result (`{value}`)."
    )


# --- tool execution ---------------------------------------------------------------------


class ToolExecuteIn(WireModel):
    tenant: DnsLabel = Field(description="The caller's tenant when omitted or null.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The tool's parameters (see GET /api/v1/tools)."
    )


class ToolExecution(WireModel):
    run_id: str = Field(description="The one-step run executing the tool.")
    name: str
    namespace: str
    tenant: str
    tool: str
    step_id: str
    phase: str
    links: RunLinks


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
    tenant: DnsLabel = Field(description="The caller's tenant when omitted or null.")
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    content: Annotated[str, StringConstraints(min_length=1, max_length=2_000_000)]
    source: Annotated[str, StringConstraints(max_length=2000)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class KnowledgeDocumentCreated(WireModel):
    id: str
    chunks: int


class KnowledgeSearchIn(WireModel):
    tenant: DnsLabel = Field(description="The caller's tenant when omitted or null.")
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    top_k: int = Field(default=5, ge=1, le=50)


# --- tools and health -------------------------------------------------------------------


class ToolInfo(WireModel):
    name: str
    version: str
    description: str
    kind: Literal["builtin", "ClusterTool", "Tool"] = Field(
        description="builtin, the platform's catalog (ClusterTool) or the tenant's own (Tool)."
    )
    side_effect: bool
    scopes: list[str]
    cost_estimate: int = Field(description="Micro-dollars per call, the tool's own estimate.")
    timeout_seconds: int
    image: str | None = Field(default=None, description="A user tool's container image.")
    params_schema: dict[str, Any]
    result_schema: dict[str, Any]


class UnusableTool(WireModel):
    name: str
    kind: Literal["ClusterTool", "Tool"]
    message: str = Field(description="Why runs cannot use it (fix the definition).")


class ToolCatalog(WireModel):
    tenant: str
    items: list[ToolInfo] = Field(description="The tools the tenant's runs may use.")
    unusable: list[UnusableTool] = Field(
        default_factory=list, description="Tools defined for the tenant that cannot run."
    )


class ToolListQuery(WireModel):
    tenant: DnsLabel | None = Field(default=None, description="Default: the caller's tenant.")


class PlannedStepView(WireModel):
    id: str
    tool: str
    params: dict[str, Any]
    side_effect: bool
    scopes: list[str]
    cost_estimate: int = Field(description="Micro-dollars, the tool's own estimate.")
    requires_approval: bool
    approval: ApprovalPolicy | None = Field(
        default=None, description="The terms the step waits under (tenant and run policy)."
    )


class PlanView(WireModel):
    """The plan a run would get, without creating it (seed 000's `POST /agent/plan`)."""

    planner: str = Field(description="`builtin` or `explicit` (a model's plan is not previewed).")
    steps: list[PlannedStepView]
    cost_estimate: int = Field(description="Sum of the steps' estimates, micro-dollars.")
    approvals_required: int
    not_allowed: list[str] = Field(
        default_factory=list,
        description="Planned tools the tenant may not use: such a run would fail at admission.",
    )


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
    idempotency_key: str = Field(
        description="<run-id>:<step-id>, the same for every attempt: side effects carry it "
        "so a retried step never repeats one."
    )
    config: StepConfig = Field(default_factory=StepConfig)


MAX_PROGRESS_REPORTS = 1000


class StepProgressIn(WireModel):
    """A running step's progress, shown live to the run's clients (SSE `step_progress`,
    AG-UI state). `seq` numbers the attempt's reports: a repeated post of the same `seq`
    (a retry after a lost answer) is stored once."""

    seq: int = Field(ge=0, le=MAX_PROGRESS_REPORTS)
    message: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    percent: float | None = Field(default=None, ge=0, le=100)


class StepProgressRecorded(WireModel):
    seq: int
    stored: bool = Field(description="False: this seq was already stored (a replay).")


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
    tenant: DnsLabel | None = Field(default=None, description="Default: the caller's tenant.")
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Annotated[str, StringConstraints(max_length=512)] | None = None


class EventsQuery(WireModel):
    last_event_id: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None,
        description="Resume after this event id (for clients that cannot set headers).",
    )


# --- auth, audit, tenants ---------------------------------------------------------------

TenantName = Annotated[
    str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class StreamToken(WireModel):
    token: str = Field(description="Pass as `?access_token=` to this run's events route only.")
    expires_at: datetime
    expires_in: int = Field(description="Seconds until the token expires.")
    events_url: str = Field(description="The run's events route with the token in the query.")


class AuditQuery(WireModel):
    tenant: DnsLabel | None = Field(default=None, description="Default: the caller's tenant.")
    action: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    actor: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None
    since: datetime | None = Field(default=None, description="Entries at or after this time.")
    until: datetime | None = Field(default=None, description="Entries before this time.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(max_length=64)] | None = None


class AuditEntry(WireModel):
    id: int
    tenant: str
    actor: str
    action: str
    target: str
    request_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class AuditList(WireModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )


class TenantCreateIn(WireModel):
    name: TenantName = Field(description="The tenant's id; its namespace is tenant-<name>.")
    spec: TenantSpec


class TenantView(WireModel):
    name: str
    namespace: str
    phase: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class TenantDeleted(WireModel):
    name: str
    deleted: bool


class UsageQuery(WireModel):
    since: datetime | None = Field(default=None, description="Count from this time (default: all).")


class TenantUsage(WireModel):
    tenant: str
    since: datetime | None = None
    runs_total: int
    runs_by_phase: dict[str, int]
    tool_calls: int
    tool_calls_failed: int
    run_seconds: float = Field(description="Wall time of finished runs, created to finished.")
