"""Approvals: which steps need a person (policy), the request on a step, and the answers.

A decision is an `Approval` custom resource (namespaced, immutable once created);
the operator validates it against the waiting step and writes the outcome into
the Approval's status and the run's `status.steps[].approval`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from sba_core.models.base import Condition, WireModel

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class OnOutcome(StrEnum):
    """What a denial (or an expiry) does to the run."""

    FAIL = "fail"
    SKIP = "skip"


class ApprovalPolicy(WireModel):
    """Which steps need a person's approval, who may give it, and for how long it waits.

    A step needs approval when any rule matches: `always`, a side-effecting tool
    (`sideEffects`), a tool whose cost estimate reaches `costThreshold`
    (micro-dollars), a tool requiring one of `scopes`, or a tool named in `tools`.
    """

    always: bool = False
    side_effects: bool = Field(default=False, description="Every side-effecting tool.")
    cost_threshold: int | None = Field(
        default=None, ge=0, description="Tools whose costEstimate (micro-dollars) is at least this."
    )
    scopes: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        default_factory=list, description="Tools requiring any of these scopes."
    )
    tools: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        default_factory=list, description="These tools, by name."
    )
    approvers: list[Name] = Field(
        default_factory=list, description="Users who may answer; anyone allowed by RBAC when empty."
    )
    approver_groups: list[Name] = Field(
        default_factory=list, description="Groups whose members may answer."
    )
    quorum: int = Field(default=1, ge=1, le=20, description="Approvals needed; one denial wins.")
    timeout_seconds: int = Field(
        default=86400, ge=1, le=30 * 86400, description="The request expires this long after."
    )
    on_deny: OnOutcome = Field(default=OnOutcome.FAIL, description="Fail the run or skip the step.")
    on_expire: OnOutcome = Field(default=OnOutcome.FAIL, description="The same, on expiry.")


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class Decision(StrEnum):
    APPROVED = "approved"
    DENIED = "denied"


class RecordedDecision(WireModel):
    """One accepted answer, as the run's status shows it."""

    approver: str
    decision: Decision
    reason: str | None = None
    ts: datetime = Field(description="The API server's clock: the Approval's creationTimestamp.")
    approval: str = Field(description="Name of the Approval object.")


class StepApproval(WireModel):
    """The approval request on one step, and where it stands."""

    state: ApprovalState = ApprovalState.PENDING
    requested_at: datetime
    expires_at: datetime
    digest: str = Field(description="sha256 of tool, canonical params, run uid, step id, attempt.")
    action: str
    cost_estimate: int = 0
    requires: list[str] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)
    approver_groups: list[str] = Field(default_factory=list)
    quorum: int = 1
    on_deny: OnOutcome = OnOutcome.FAIL
    on_expire: OnOutcome = OnOutcome.FAIL
    decisions: list[RecordedDecision] = Field(default_factory=list)
    decided_at: datetime | None = None


class ApprovalSpec(WireModel):
    """A person's answer to one step's approval request. Immutable once created."""

    run: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Name of the AgentRun (same namespace)."
    )
    step_id: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    decision: Decision
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
    approver: Name = Field(
        description="Must be the requesting Kubernetes user (admission policy), unless the"
        " requester is a delegating approver such as the API."
    )
    groups: list[Name] = Field(
        default_factory=list,
        description="The approver's groups, for approverGroups; each one checked by admission.",
    )
    digest: Digest = Field(description="The digest of the awaiting_approval request answered.")


class ApprovalOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    """Why an Approval was rejected; the API maps these to HTTP statuses."""

    RUN_NOT_FOUND = "RunNotFound"  # 404
    STEP_NOT_FOUND = "StepNotFound"  # 404
    NOT_WAITING = "StepNotAwaitingApproval"  # 409
    ALREADY_ANSWERED = "AlreadyAnswered"  # 409
    DIGEST_MISMATCH = "DigestMismatch"  # 409
    NOT_AN_APPROVER = "NotAnApprover"  # 403


class ApprovalStatus(WireModel):
    outcome: ApprovalOutcome | None = None
    reason: str | None = Field(default=None, description="Accepted, or a RejectReason.")
    message: str | None = None
    run_uid: str | None = None
    processed_at: datetime | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        description="`Processed`: True once the operator has answered (reason = `reason`).",
    )
