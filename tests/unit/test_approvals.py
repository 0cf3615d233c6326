"""Approval policy (pure): which steps need a person, the digest, validation and the tally."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sba_core.approvals import (
    ToolFacts,
    approval_digest,
    check_answer,
    effective_policy,
    may_answer,
    new_request,
    policy_matches,
    record,
    tally,
)
from sba_core.models.approval import (
    ApprovalPolicy,
    ApprovalSpec,
    ApprovalState,
    OnOutcome,
    RejectReason,
)
from sba_core.models.run import RetryPolicy
from sba_core.retry import FailureKind, backoff_seconds, classify_job_failure, should_retry

T0 = datetime(2025, 12, 3, 11, 59, tzinfo=UTC)
CRM = ToolFacts("crm.sync", side_effect=True, scopes=("write:crm",), cost_estimate=2000)
SEARCH = ToolFacts(
    "knowledge.search", side_effect=False, scopes=("read:knowledge",), cost_estimate=50
)


@pytest.mark.parametrize(
    ("policy", "crm", "search"),
    [
        (ApprovalPolicy(), False, False),
        (ApprovalPolicy(always=True), True, True),
        (ApprovalPolicy(side_effects=True), True, False),
        (ApprovalPolicy(cost_threshold=1000), True, False),
        (ApprovalPolicy(cost_threshold=50), True, True),
        (ApprovalPolicy(scopes=["write:crm"]), True, False),
        (ApprovalPolicy(tools=["knowledge.search"]), False, True),
    ],
)
def test_policy_rules(policy: ApprovalPolicy, crm: bool, search: bool) -> None:
    assert policy_matches(policy, CRM) is crm
    assert policy_matches(policy, SEARCH) is search


def test_run_policy_cannot_lower_the_tenants_and_stricter_terms_win() -> None:
    tenant = ApprovalPolicy(
        side_effects=True,
        approvers=["carol"],
        quorum=1,
        timeout_seconds=600,
        on_deny=OnOutcome.FAIL,
    )
    run = ApprovalPolicy(always=True, quorum=2, timeout_seconds=3600, on_deny=OnOutcome.SKIP)
    merged = effective_policy(tenant, run, CRM)
    assert merged is not None
    assert (merged.quorum, merged.timeout_seconds, merged.on_deny) == (2, 600, OnOutcome.FAIL)
    assert merged.approvers == ["carol"]
    # Only the run's policy matches a read-only tool: its own terms.
    only_run = effective_policy(tenant, run, SEARCH)
    assert only_run is run
    assert effective_policy(tenant, None, SEARCH) is None


def test_digest_binds_the_exact_action() -> None:
    base = {"tool": "crm.sync", "params": {"contacts": [{"email": "a@b.co"}]}, "run_uid": "u"}
    one = approval_digest(**base, step_id="sync", attempt=1)  # type: ignore[arg-type]
    assert one == approval_digest(  # key order does not matter: canonical JSON
        tool="crm.sync",
        params={"contacts": [{"email": "a@b.co"}]},
        run_uid="u",
        step_id="sync",
        attempt=1,
    )
    assert len(one) == 64
    changed = [
        approval_digest(
            tool="crm.sync",
            params={"contacts": [{"email": "x@b.co"}]},
            run_uid="u",
            step_id="sync",
            attempt=1,
        ),
        approval_digest(
            tool="task.create",
            params=base["params"],
            run_uid="u",
            step_id="sync",  # type: ignore[arg-type]
            attempt=1,
        ),
        approval_digest(
            tool="crm.sync",
            params=base["params"],
            run_uid="v",
            step_id="sync",  # type: ignore[arg-type]
            attempt=1,
        ),
        approval_digest(
            tool="crm.sync",
            params=base["params"],
            run_uid="u",
            step_id="other",  # type: ignore[arg-type]
            attempt=1,
        ),
        approval_digest(
            tool="crm.sync",
            params=base["params"],
            run_uid="u",
            step_id="sync",  # type: ignore[arg-type]
            attempt=2,
        ),
    ]
    assert one not in changed
    assert len(set(changed)) == len(changed)


def _answer(
    approver: str, decision: str = "approved", digest: str = "d" * 64, **kw: object
) -> ApprovalSpec:
    return ApprovalSpec.model_validate(
        {
            "run": "r",
            "stepId": "sync",
            "decision": decision,
            "approver": approver,
            "digest": digest,
            **kw,
        }
    )


def test_validation_reasons_and_quorum_with_one_denial_winning() -> None:
    policy = ApprovalPolicy(
        always=True, approvers=["alice", "bob"], approver_groups=["ops"], quorum=2
    )
    request = new_request(policy, CRM, digest="d" * 64, now=T0)
    assert request.expires_at == T0 + timedelta(days=1)
    assert request.requires == ["write:crm"]
    assert check_answer(request, _answer("alice"), waiting=False)[0] is RejectReason.NOT_WAITING  # type: ignore[index]
    assert check_answer(request, _answer("alice", digest="e" * 64), waiting=True)[0] is (  # type: ignore[index]
        RejectReason.DIGEST_MISMATCH
    )
    assert (
        check_answer(request, _answer("mallory"), waiting=True)[0] is RejectReason.NOT_AN_APPROVER
    )  # type: ignore[index]
    assert may_answer(request, "dave", ["ops"])
    assert check_answer(request, _answer("alice"), waiting=True) is None
    record(request, _answer("alice"), "a1", T0)
    assert tally(request) is ApprovalState.PENDING  # quorum 2
    assert check_answer(request, _answer("alice"), waiting=True)[0] is RejectReason.ALREADY_ANSWERED  # type: ignore[index]
    record(request, _answer("dave", groups=["ops"]), "a2", T0)
    assert tally(request) is ApprovalState.APPROVED
    record(request, _answer("bob", "denied"), "a3", T0)
    assert tally(request) is ApprovalState.DENIED  # one denial wins


def test_anyone_may_answer_when_no_approvers_are_named() -> None:
    request = new_request(ApprovalPolicy(always=True), CRM, digest="d" * 64, now=T0)
    assert may_answer(request, "whoever", [])


def test_backoff_is_exponential_capped_jittered_and_deterministic() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_base_seconds=2, backoff_max_seconds=10, jitter=0.5)
    delays = [backoff_seconds(policy, n, "run:step") for n in range(1, 6)]
    assert delays == [backoff_seconds(policy, n, "run:step") for n in range(1, 6)]
    for n, delay in enumerate(delays, start=1):
        full = min(2 * 2 ** (n - 1), 10)
        assert full * 0.5 <= delay <= full
    assert delays[-1] <= 10
    no_jitter = RetryPolicy(backoff_base_seconds=1, backoff_max_seconds=60, jitter=0)
    assert [backoff_seconds(no_jitter, n) for n in (1, 2, 3)] == [1, 2, 4]
    assert backoff_seconds(policy, 1, "a") != backoff_seconds(policy, 1, "b")


def test_failure_classes() -> None:
    assert classify_job_failure("BackoffLimitExceeded", False) is FailureKind.TRANSIENT
    assert classify_job_failure("DeadlineExceeded", False) is FailureKind.TRANSIENT
    assert classify_job_failure("PodFailurePolicy", False) is FailureKind.PERMANENT  # exit 2
    assert classify_job_failure("BackoffLimitExceeded", True) is FailureKind.PERMANENT
    policy = RetryPolicy(max_attempts=2)
    assert should_retry(policy, FailureKind.TRANSIENT, 1)
    assert not should_retry(policy, FailureKind.TRANSIENT, 2)
    assert not should_retry(policy, FailureKind.PERMANENT, 1)


def test_generated_approval_crd_and_admission_policies() -> None:
    from sba_core.crds import all_crds

    manifests = all_crds()
    crd = manifests["approvals.yaml"]
    assert crd["spec"]["names"]["shortNames"] == ["apr"]
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["required"]) == {"run", "stepId", "decision", "approver", "digest"}
    assert spec["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    policy = manifests["admission-approvals.yaml"]
    rules = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "object.spec.approver == request.userInfo.username" in rules
    assert "oldObject.spec" in rules
    assert "sba-agentic:delegating-approvers" in policy["spec"]["variables"][0]["expression"]
    cancel = manifests["admission-agentrun-cancel.yaml"]
    assert (
        "spec.cancel.requestedBy == request.userInfo.username"
        in (cancel["spec"]["validations"][0]["expression"])
    )
    run_spec = manifests["agentruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = run_spec["properties"]["spec"]["properties"]
    assert "default" not in props["cancel"]  # absent means "not cancelled"
    assert "default" not in props["approvalPolicy"]
