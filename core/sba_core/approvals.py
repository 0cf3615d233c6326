"""Approval policy, pure: which steps need a person, the request's digest, and the tally.

The tenant's policy is the floor a run cannot lower; the run's own policy can
only add requirements. When both require a step, the stricter terms win: the
larger quorum, the shorter timeout, `fail` over `skip`, and approvers named by
the tenant over those named by the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sba_core.models.approval import (
    ApprovalPolicy,
    ApprovalSpec,
    ApprovalState,
    Decision,
    OnOutcome,
    RecordedDecision,
    RejectReason,
    StepApproval,
)


@dataclass(frozen=True)
class ToolFacts:
    """What the policy looks at: the tool's declaration (sba_core.tools.registry.ToolSpec)."""

    name: str
    side_effect: bool
    scopes: tuple[str, ...]
    cost_estimate: int


def policy_matches(policy: ApprovalPolicy, tool: ToolFacts) -> bool:
    if policy.always or (policy.side_effects and tool.side_effect):
        return True
    if policy.cost_threshold is not None and tool.cost_estimate >= policy.cost_threshold:
        return True
    if set(policy.scopes) & set(tool.scopes):
        return True
    return tool.name in policy.tools


def _stricter(a: OnOutcome, b: OnOutcome) -> OnOutcome:
    return OnOutcome.FAIL if OnOutcome.FAIL in (a, b) else OnOutcome.SKIP


def effective_policy(
    tenant: ApprovalPolicy | None, run: ApprovalPolicy | None, tool: ToolFacts
) -> ApprovalPolicy | None:
    """The terms under which `tool` needs approval, or None when it needs none."""
    matching = [p for p in (tenant, run) if p is not None and policy_matches(p, tool)]
    if not matching:
        return None
    if len(matching) == 1:
        return matching[0]
    t, r = matching
    named = t if (t.approvers or t.approver_groups) else r
    return ApprovalPolicy(
        always=True,
        approvers=list(named.approvers),
        approver_groups=list(named.approver_groups),
        quorum=max(t.quorum, r.quorum),
        timeout_seconds=min(t.timeout_seconds, r.timeout_seconds),
        on_deny=_stricter(t.on_deny, r.on_deny),
        on_expire=_stricter(t.on_expire, r.on_expire),
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def approval_digest(
    *, tool: str, params: Mapping[str, Any], run_uid: str, step_id: str, attempt: int
) -> str:
    """sha256 over the exact action: any change to tool, params, run, step or attempt voids it."""
    body = canonical_json(
        {
            "tool": tool,
            "params": dict(params),
            "runUid": run_uid,
            "stepId": step_id,
            "attempt": attempt,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


def new_request(
    policy: ApprovalPolicy,
    tool: ToolFacts,
    *,
    digest: str,
    now: datetime,
) -> StepApproval:
    return StepApproval(
        requested_at=now,
        expires_at=now + timedelta(seconds=policy.timeout_seconds),
        digest=digest,
        action=tool.name,
        cost_estimate=tool.cost_estimate,
        requires=list(tool.scopes),
        approvers=list(policy.approvers),
        approver_groups=list(policy.approver_groups),
        quorum=policy.quorum,
        on_deny=policy.on_deny,
        on_expire=policy.on_expire,
    )


def may_answer(request: StepApproval, approver: str, groups: Sequence[str]) -> bool:
    if not request.approvers and not request.approver_groups:
        return True  # anyone RBAC lets create Approvals in the namespace
    return approver in request.approvers or bool(set(groups) & set(request.approver_groups))


def check_answer(
    request: StepApproval | None, answer: ApprovalSpec, *, waiting: bool
) -> tuple[RejectReason, str] | None:
    """Why `answer` cannot count for this step's request, or None when it counts."""
    if request is None or not waiting or request.state is not ApprovalState.PENDING:
        state = "no approval request" if request is None else f"its request is {request.state}"
        message = f"step {answer.step_id!r} is not awaiting approval: {state}"
        return RejectReason.NOT_WAITING, message
    if answer.digest != request.digest:
        return (
            RejectReason.DIGEST_MISMATCH,
            "the digest does not match the action awaiting approval (it changed, or another"
            " request was answered)",
        )
    if not may_answer(request, answer.approver, answer.groups):
        return RejectReason.NOT_AN_APPROVER, f"{answer.approver!r} may not answer this request"
    if any(d.approver == answer.approver for d in request.decisions):
        return RejectReason.ALREADY_ANSWERED, f"{answer.approver!r} has already answered"
    return None


def record(request: StepApproval, answer: ApprovalSpec, name: str, ts: datetime) -> None:
    request.decisions.append(
        RecordedDecision(
            approver=answer.approver,
            decision=answer.decision,
            reason=answer.reason,
            ts=ts,
            approval=name,
        )
    )


def tally(request: StepApproval) -> ApprovalState:
    """One denial wins; `quorum` distinct approvals approve; otherwise still pending."""
    if any(d.decision is Decision.DENIED for d in request.decisions):
        return ApprovalState.DENIED
    approvers = {d.approver for d in request.decisions if d.decision is Decision.APPROVED}
    if len(approvers) >= request.quorum:
        return ApprovalState.APPROVED
    return ApprovalState.PENDING
