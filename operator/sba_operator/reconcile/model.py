"""What the reconcile observes and what it decides: plain, immutable data.

The driver (sba_operator.handlers) fills an `Observation` from the API server
and Postgres, calls the pure `decide_run`, and executes the `Decision`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sba_core.events import NewRunEvent
from sba_core.models.approval import ApprovalPolicy
from sba_core.models.run import AgentRunSpec, AgentRunStatus, RunPhase
from sba_core.planning import Plan
from sba_core.step_token import StepClaims
from sba_core.summaries import clip


class JobState(StrEnum):
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class ObservedJob:
    """A tool Job as the reconcile needs it."""

    name: str
    labels: Mapping[str, str]
    state: JobState
    reason: str | None = None
    message: str | None = None
    finished_at: datetime | None = None
    termination_message: str | None = None
    """The tool container's termination message (from its pod), when it failed."""


@dataclass(frozen=True)
class ObservedToolCall:
    """One attempt's row in `tool_calls`."""

    id: str
    success: bool | None
    result: Any = None
    error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class TenantView:
    name: str
    suspended: bool = False
    allowed_tools: tuple[str, ...] | None = None
    max_concurrent_runs: int | None = None
    """spec.quotas.maxConcurrentRuns; None: no limit."""
    approval_policy: ApprovalPolicy | None = None
    ready: bool = True
    """The Tenant is provisioned (status Ready=True); runs of a tenant not ready wait."""
    not_ready_message: str | None = None
    tool_calls_per_minute: int | None = None
    """spec.quotas.toolCallsPerMinute; None: the model's default applies."""
    tokens_per_day: int | None = None
    """spec.quotas.tokensPerDay; None: the model's default applies."""


@dataclass(frozen=True)
class RateLimited:
    """The tenant's tool-call window refused to start this attempt; try again at `retry_at`."""

    step_id: str
    attempt: int
    retry_at: datetime
    per_minute: int


@dataclass(frozen=True)
class PlanRefusal:
    """The driver would not (or could not) plan the run: it fails with this reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class ObservedApproval:
    """An `Approval` naming this run that the operator has not answered yet."""

    name: str
    spec: Mapping[str, Any]
    created_at: datetime
    """The API server's clock: the decision's timestamp."""


@dataclass(frozen=True)
class PeerRun:
    """Another run of the same tenant, as the FIFO queue needs it."""

    name: str
    uid: str
    created_at: datetime
    phase: RunPhase
    cancelled: bool = False

    @property
    def queue_key(self) -> tuple[datetime, str]:
        return (self.created_at, self.name)


@dataclass(frozen=True)
class Observation:
    run: Mapping[str, Any]
    """The fresh AgentRun object (apiVersion, kind, metadata, spec, status)."""
    now: datetime
    jobs: Mapping[str, ObservedJob] = field(default_factory=dict)
    """The run's Jobs (label run-uid), by name."""
    tool_calls: Mapping[tuple[str, int], ObservedToolCall] = field(default_factory=dict)
    """Stored tool calls by (step id, attempt)."""
    tenant: TenantView | None = None
    """The Tenant named by spec.tenant; None when there is none."""
    foreign_jobs: frozenset[str] = frozenset()
    """Job names held by objects that are not ours (found on a 409); never adopted."""
    approvals: tuple[ObservedApproval, ...] = ()
    """Unanswered Approvals whose spec.run names this run, oldest first."""
    peers: tuple[PeerRun, ...] | None = None
    """The tenant's other runs; observed only while this run is pending."""
    plan: Plan | None = None
    """The run's plan of record (made by the driver's planner, stored in Postgres);
    None: the deterministic builtin planner (or the explicit plan) gives it."""
    await_plan: bool = False
    """The driver plans this run itself (LLM planner) once it is in `planning`:
    the decision stops there and says `needs_plan`."""
    plan_refusal: PlanRefusal | None = None
    rate_limit: RateLimited | None = None
    turn_results: Mapping[str, Any] = field(default_factory=dict)
    """Agent-loop runs: each finished model turn's result by step id (`turn-<n>`), from
    Postgres; the loop's later steps are derived from them (sba_core.agent_loop)."""


@dataclass(frozen=True)
class StartStep:
    """Start (or re-create) one attempt: record it, mint its token Secret, create its Job."""

    step_id: str
    index: int
    attempt: int
    tool: str
    tool_version: str
    params: Mapping[str, Any]
    job_name: str
    secret_name: str
    job: Mapping[str, Any]
    claims: StepClaims
    fresh: bool = True
    """A new attempt (takes a slot of the tenant's tool-call window); False when the Job
    of an attempt already started is only re-created."""


@dataclass(frozen=True)
class RecordInput:
    """Store a `user.input` step's value as its (successful) tool call — or, with `error`,
    a step that never ran as a failed one (an agent-loop call a person denied: the model
    reads that outcome in its next turn)."""

    step_id: str
    attempt: int
    tool: str
    tool_version: str
    value: str | None
    error: str | None = None


@dataclass(frozen=True)
class ApprovalUpdate:
    """The status to write on an Approval (accepted or rejected, with the reason)."""

    name: str
    status: Mapping[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class DeadLetter:
    """A step that exhausted its retries."""

    step_id: str
    tool: str
    attempts: int
    error: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class KubeEvent:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: AgentRunStatus
    status_changed: bool
    spec: AgentRunSpec | None = None
    db_tenant: str | None = None
    """Tenant id to record the run under in Postgres; None: the run is not recorded."""
    record_run: bool = False
    """Upsert the run row (first sight)."""
    phase_changed: bool = False
    events: tuple[NewRunEvent, ...] = ()
    start_steps: tuple[StartStep, ...] = ()
    delete_jobs: tuple[str, ...] = ()
    delete_secrets: tuple[str, ...] = ()
    kube_events: tuple[KubeEvent, ...] = ()
    record_inputs: tuple[RecordInput, ...] = ()
    approval_updates: tuple[ApprovalUpdate, ...] = ()
    audit: tuple[AuditEntry, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    wake_at: datetime | None = None
    """Reconcile again at this time (backoff, deadlines, approval expiry), events or not."""
    released_slot: bool = False
    """The run left a slot-holding phase (or its queue): poke the tenant's pending runs."""
    needs_plan: bool = False
    """The run waits in `planning` for the driver's planner (Observation.await_plan)."""

    @property
    def idle(self) -> bool:
        """Nothing to do: the run is at its fixpoint."""
        return not (
            self.status_changed
            or self.record_run
            or self.events
            or self.start_steps
            or self.delete_jobs
            or self.delete_secrets
            or self.record_inputs
            or self.approval_updates
            or self.audit
            or self.dead_letters
        )

    @property
    def phase(self) -> RunPhase:
        return self.status.phase


# -- parsing raw Kubernetes objects (pure) ------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def termination_detail(message: str | None) -> str | None:
    """The useful part of a termination message: the tool runtime writes short JSON."""
    if not message or not message.strip():
        return None
    text = message.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return clip(text.splitlines()[-1] if text.splitlines() else text)
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "summary"):
            value = data.get(key)
            if isinstance(value, str) and value:
                code = data.get("code")
                return clip(f"{code}: {value}" if isinstance(code, str) and code else value)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return clip(str(value["message"]))
    return clip(text)


def pod_termination_message(pods: Sequence[Mapping[str, Any]], container: str) -> str | None:
    """The newest terminated `container`'s message among a Job's pods."""
    best: tuple[str, str] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != container:
                continue
            terminated = (cs.get("state") or {}).get("terminated") or (
                (cs.get("lastState") or {}).get("terminated")
            )
            if not terminated:
                continue
            finished = str(terminated.get("finishedAt") or "")
            text = terminated.get("message") or (
                f"exit code {terminated.get('exitCode')}"
                + (f" ({terminated['reason']})" if terminated.get("reason") else "")
            )
            if best is None or finished >= best[0]:
                best = (finished, str(text))
    return best[1] if best else None


def observe_job(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = (), container: str = "tool"
) -> ObservedJob:
    """Reduce a batch/v1 Job (and, for a failed one, its pods) to what the reconcile needs."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    labels = dict(meta.get("labels") or {})
    name = str(meta.get("name", ""))
    if "Failed" in conditions:
        cond = conditions["Failed"]
        return ObservedJob(
            name=name,
            labels=labels,
            state=JobState.FAILED,
            reason=cond.get("reason") or "Failed",
            message=cond.get("message") or None,
            finished_at=_parse_time(cond.get("lastTransitionTime")),
            termination_message=pod_termination_message(pods, container),
        )
    if "Complete" in conditions:
        cond = conditions["Complete"]
        return ObservedJob(
            name=name,
            labels=labels,
            state=JobState.SUCCEEDED,
            finished_at=_parse_time(status.get("completionTime"))
            or _parse_time(cond.get("lastTransitionTime")),
        )
    return ObservedJob(name=name, labels=labels, state=JobState.ACTIVE)


parse_time = _parse_time
