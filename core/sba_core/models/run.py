"""The AgentRun resource: what a client asks for (spec) and what happened (status)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from sba_core.models.approval import ApprovalPolicy, StepApproval
from sba_core.models.base import Condition as Condition  # re-exported: models.run.Condition
from sba_core.models.base import WireModel
from sba_core.tools.names import ToolRef

DnsLabel = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
StepId = Annotated[
    str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]

MAX_PROMPT_CHARS = 8000
MAX_PLAN_STEPS = 20
MAX_SUMMARY_CHARS = 512
MAX_INPUT_CHARS = 8000
MAX_ANSWER_CHARS = 8000
"""Of a model's answer kept in status.result (etcd); the whole text is the step's result."""


class RunPhase(StrEnum):
    """Where a run is in its lifecycle (seed 000, "Lifecycle Persetujuan")."""

    PENDING = "pending"
    PLANNING = "planning"
    EXECUTING = "executing"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepPhase(StrEnum):
    """Where one tool step is."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    """A person must approve the step's exact action before its Job is created."""
    AWAITING_INPUT = "awaiting_input"
    """A `user.input` step: waits until `spec.inputs[<step id>]` is set."""
    RUNNING = "running"
    BACKOFF = "backoff"
    """A transient failure: the next attempt starts at `nextAttemptAt`."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


STEP_SETTLED: frozenset[StepPhase] = frozenset(
    {StepPhase.SUCCEEDED, StepPhase.SKIPPED, StepPhase.FAILED, StepPhase.CANCELLED}
)


class RunMode(StrEnum):
    PLAN = "plan"
    """A plan made up front (the planner's, or `plan`), run step by step."""
    LOOP = "loop"
    """An agent loop: after each step the model sees the results and calls the next tool
    (a visible step, under the same approvals, quotas and limits) or answers."""


class RunOptions(WireModel):
    """Knobs a client may set on a run; every one has a default."""

    locale: Annotated[str, StringConstraints(min_length=2, max_length=16)] = Field(
        default="en", description="BCP 47 language tag for generated text."
    )
    top_k: int = Field(default=5, ge=1, le=50, description="Knowledge hits to retrieve per search.")
    max_steps: int = Field(
        default=8, ge=1, le=MAX_PLAN_STEPS, description="Upper bound on the plan's length."
    )


class RetryPolicy(WireModel):
    """How often a step is tried after transient failures, and how long to wait between tries.

    Attempt n+1 starts `min(base * 2**(n-1), max)` seconds after attempt n failed,
    shortened by up to `jitter` of that (deterministic per run, step and attempt).
    Permanent failures (the tool's own verdict, bad params, a contract violation,
    a denial) are never retried.
    """

    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts in all, the first too.")
    backoff_base_seconds: float = Field(default=2.0, ge=0, le=3600)
    backoff_max_seconds: float = Field(default=60.0, ge=0, le=86400)
    jitter: float = Field(default=0.2, ge=0, le=1, description="Fraction of the delay to vary.")


class PlanStep(WireModel):
    """One step of an explicit plan: a tool and its parameters."""

    id: StepId | None = Field(
        default=None, description="Step id, unique in the plan; generated when absent."
    )
    tool: ToolRef = Field(
        description="The tool to run: a builtin, a ClusterTool, or a Tool in the run's namespace."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Tool parameters, checked against the tool's contract."
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Overrides spec.retry for this step."
    )
    timeout_seconds: int | None = Field(
        default=None, ge=1, le=86400, description="This step's Job activeDeadlineSeconds."
    )


class CancelRequest(WireModel):
    """Set (by a patch, or the API) to stop the run; bound to the requester by admission."""

    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    requested_by: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="The Kubernetes user (or, via the API, the JWT user)."
    )


class RunRequest(WireModel):
    """What a client asks the orchestrator to do: the run's terms, fixed at creation.

    This is the body of `POST /api/v1/runs`; `AgentRunSpec` adds the fields that
    change later (cancel, inputs) and only have their own endpoints.
    """

    tenant: DnsLabel = Field(description="Tenant that owns the run.")
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)] = Field(
        description="The goal, in the user's words."
    )
    user: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Who asked for the run."
    )
    options: RunOptions = Field(default_factory=RunOptions)
    mode: RunMode = Field(
        default=RunMode.PLAN,
        description="`plan` (default): plan first, then run; `loop`: the model decides each"
        " next tool call from the results so far (options.maxSteps bounds it).",
    )
    plan: Annotated[list[PlanStep], Field(max_length=MAX_PLAN_STEPS)] | None = Field(
        default=None, description="Explicit plan; when absent the planner makes one."
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Default retry policy of every step."
    )
    deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 86400,
        description="The run fails (DeadlineExceeded) this long after it started planning;"
        " time spent awaiting approval or input counts.",
    )
    approval_policy: ApprovalPolicy | None = Field(
        default=None,
        description="Which steps need a person's approval, on top of the tenant's policy.",
    )

    @model_validator(mode="after")
    def _loop_has_no_plan(self) -> RunRequest:
        if self.mode is RunMode.LOOP and self.plan:
            raise ValueError("spec.mode loop lets the model choose the steps: give no plan")
        return self


class AgentRunSpec(RunRequest):
    """An AgentRun's spec: the terms of the run plus what people add while it runs."""

    cancel: CancelRequest | None = Field(
        default=None, description="Set to stop the run; cannot be changed once set."
    )
    inputs: dict[StepId, Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)]] = Field(
        default_factory=dict,
        description="User input by step id: the result of that `user.input` step."
        " Entries can be added, never changed.",
    )


class StepStatus(WireModel):
    """What happened to one step. Full results live in Postgres; this is the summary."""

    id: str
    index: int = Field(ge=0)
    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    phase: StepPhase = StepPhase.PENDING
    attempts: int = Field(default=0, ge=0)
    job_name: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: Annotated[str, StringConstraints(max_length=MAX_SUMMARY_CHARS)] | None = None
    result_ref: str | None = Field(default=None, description="Tool-call id of the full result.")
    error: Annotated[str, StringConstraints(max_length=MAX_SUMMARY_CHARS)] | None = None
    max_attempts: int | None = Field(default=None, ge=1, description="From the retry policy.")
    next_attempt_at: datetime | None = Field(
        default=None, description="In backoff: when the next attempt starts."
    )
    deadline_at: datetime | None = Field(
        default=None, description="Running: when the operator gives up on the attempt's Job."
    )
    dead_lettered: bool | None = Field(
        default=None, description="True when the step exhausted its retries."
    )
    approval: StepApproval | None = None


class RunUsage(WireModel):
    """What a run consumed."""

    tool_calls: int = 0
    tokens: int = 0
    run_seconds: float = 0.0


class RunResult(WireModel):
    """The outcome a client came for."""

    summary: str | None = None
    answer: Annotated[str, StringConstraints(max_length=MAX_ANSWER_CHARS)] | None = Field(
        default=None,
        description="The model's answer (the last llm.generate step's text, clipped to"
        f" {MAX_ANSWER_CHARS} characters; the full text is that step's result).",
    )
    answer_step: str | None = Field(default=None, description="The step that wrote `answer`.")
    artifact_id: str | None = None
    artifact_url: str | None = None


class Cancellation(WireModel):
    """Who stopped the run, why and when."""

    requested_by: str
    reason: str | None = None
    at: datetime | None = None


class AgentRunStatus(WireModel):
    """What the operator has observed and done; written only by the operator."""

    phase: RunPhase = RunPhase.PENDING
    run_id: str | None = Field(default=None, description="Stable id (the object's uid).")
    current_step: str | None = Field(default=None, description="Human-readable current step.")
    steps: list[StepStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    usage: RunUsage = Field(default_factory=RunUsage)
    result: RunResult | None = None
    reason: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime | None = Field(
        default=None, description="When the run fails with DeadlineExceeded (spec.deadlineSeconds)."
    )
    queue_position: int | None = Field(
        default=None, ge=1, description="Pending because the tenant is at maxConcurrentRuns."
    )
    cancellation: Cancellation | None = None
    observed_generation: int | None = None
