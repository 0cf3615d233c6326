"""The AgentRun resource: what a client asks for (spec) and what happened (status)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from sba_core.models.base import WireModel
from sba_core.tools.names import ToolName

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
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunOptions(WireModel):
    """Knobs a client may set on a run; every one has a default."""

    locale: Annotated[str, StringConstraints(min_length=2, max_length=16)] = Field(
        default="en", description="BCP 47 language tag for generated text."
    )
    top_k: int = Field(default=5, ge=1, le=50, description="Knowledge hits to retrieve per search.")
    max_steps: int = Field(
        default=8, ge=1, le=MAX_PLAN_STEPS, description="Upper bound on the plan's length."
    )


class PlanStep(WireModel):
    """One step of an explicit plan: a tool and its parameters."""

    id: StepId | None = Field(
        default=None, description="Step id, unique in the plan; generated when absent."
    )
    tool: ToolName = Field(description="Registered tool to run.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Tool parameters, checked against the tool's contract."
    )


class AgentRunSpec(WireModel):
    """What a client asks the orchestrator to do."""

    tenant: DnsLabel = Field(description="Tenant that owns the run.")
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)] = Field(
        description="The goal, in the user's words."
    )
    user: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Who asked for the run."
    )
    options: RunOptions = Field(default_factory=RunOptions)
    plan: Annotated[list[PlanStep], Field(max_length=MAX_PLAN_STEPS)] | None = Field(
        default=None, description="Explicit plan; when absent the planner makes one."
    )


class Condition(WireModel):
    """A Kubernetes-style condition."""

    type: str
    status: str = Field(description='"True", "False" or "Unknown".')
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


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


class RunUsage(WireModel):
    """What a run consumed."""

    tool_calls: int = 0
    tokens: int = 0
    run_seconds: float = 0.0


class RunResult(WireModel):
    """The outcome a client came for."""

    summary: str | None = None
    artifact_id: str | None = None
    artifact_url: str | None = None


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
    observed_generation: int | None = None
