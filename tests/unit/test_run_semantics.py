"""Run semantics in the pure reconcile: approvals, cancel, retries, deadlines, queueing, input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sba_core import group
from sba_core.events import EventType
from sba_core.models.approval import ApprovalPolicy
from sba_core.models.run import RunPhase, StepPhase
from sba_core.tools.registry import builtin_registry
from sba_operator.reconcile import (
    Decision,
    JobState,
    Observation,
    ObservedJob,
    ObservedToolCall,
    RunRef,
    TenantView,
    decide_run,
)
from sba_operator.reconcile.jobs import step_labels
from sba_operator.reconcile.model import ObservedApproval, PeerRun
from sba_operator.settings import ToolSettings

UID = "7d9e3c1a-0000-4000-8000-00000000abcd"
T0 = datetime(2025, 12, 3, 11, 59, tzinfo=UTC)
TOOLS = ToolSettings(step_token_secret="s" * 40, gateway_url="http://gw.test:8080")
REGISTRY = builtin_registry()
CRM_PARAMS = {"contacts": [{"email": "a@example.com"}]}
SEARCH = {"id": "look", "tool": "knowledge.search", "params": {"query": "refunds"}}
SYNC = {"id": "sync", "tool": "crm.sync", "params": CRM_PARAMS}


def tenant(**kw: Any) -> TenantView:
    return TenantView(name="acme", **kw)


def run_obj(status: dict[str, Any] | None = None, name: str = "r1", **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": group.API_VERSION,
        "kind": group.AGENTRUN_KIND,
        "metadata": {
            "name": name,
            "namespace": "tenant-acme",
            "uid": UID,
            "generation": 1,
            "creationTimestamp": "2025-12-03T11:58:00Z",
        },
        "spec": {"tenant": "acme", "prompt": "sync the CRM", **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def decide(run: dict[str, Any], now: datetime = T0, **obs: Any) -> Decision:
    obs.setdefault("tenant", tenant())
    return decide_run(Observation(run=run, now=now, **obs), REGISTRY, TOOLS)


def then(run: dict[str, Any], d: Decision) -> dict[str, Any]:
    return {**run, "status": d.status.wire()}


def job(name: str, step: str, attempt: int, state: JobState, **kw: Any) -> ObservedJob:
    ref = RunRef(uid=UID, name="r1", namespace="tenant-acme", tenant="acme")
    return ObservedJob(name=name, labels=step_labels(ref, step, attempt), state=state, **kw)


def approval(
    name: str,
    digest: str,
    approver: str = "alice",
    decision: str = "approved",
    step: str = "sync",
    at: datetime = T0,
    **kw: Any,
) -> ObservedApproval:
    spec = {
        "run": "r1",
        "stepId": step,
        "decision": decision,
        "approver": approver,
        "digest": digest,
        "reason": "ok",
        **kw,
    }
    return ObservedApproval(name=name, spec=spec, created_at=at)


def keys(d: Decision) -> list[str]:
    return [e.dedupe_key for e in d.events]


# -- approvals ---------------------------------------------------------------------------------

NEEDS_APPROVAL = {"sideEffects": True}


def waiting_run(**policy: Any) -> tuple[dict[str, Any], Decision]:
    run = run_obj(plan=[SYNC], approvalPolicy={**NEEDS_APPROVAL, **policy})
    d = decide(run)
    return then(run, d), d


def test_side_effecting_step_waits_for_approval_with_the_seed_payload() -> None:
    _, d = waiting_run()
    s = d.status
    assert s.phase is RunPhase.AWAITING_APPROVAL
    assert s.reason == "AwaitingApproval"
    step = s.steps[0]
    assert step.phase is StepPhase.AWAITING_APPROVAL
    assert step.attempts == 0
    assert d.start_steps == ()  # no Job before a person says yes
    event = next(e for e in d.events if e.type is EventType.AWAITING_APPROVAL)
    p = event.payload
    assert p["action"] == "crm.sync"
    assert p["costEstimate"] == 2000
    assert p["requires"] == ["write:crm"]
    assert p["scope"] == ["contacts"]
    assert p["stepId"] == "sync"
    assert p["quorum"] == 1
    assert p["digest"] == step.approval.digest  # type: ignore[union-attr]
    assert p["expiresAt"] == (T0 + timedelta(days=1)).isoformat()
    assert d.wake_at == T0 + timedelta(days=1)


def test_read_only_step_needs_no_approval() -> None:
    run = run_obj(plan=[SEARCH], approvalPolicy=NEEDS_APPROVAL)
    d = decide(run)
    assert d.status.phase is RunPhase.EXECUTING
    assert [s.job_name for s in d.start_steps] == ["r1-look-a1"]


def test_tenant_policy_applies_without_a_run_policy() -> None:
    run = run_obj(plan=[SYNC])
    d = decide(run, tenant=tenant(approval_policy=ApprovalPolicy(scopes=["write:crm"])))
    assert d.status.phase is RunPhase.AWAITING_APPROVAL


def test_approval_starts_the_step_and_is_recorded_and_audited() -> None:
    run, d0 = waiting_run()
    digest = d0.status.steps[0].approval.digest  # type: ignore[union-attr]
    later = T0 + timedelta(minutes=1)
    d = decide(run, now=later + timedelta(seconds=3), approvals=(approval("a1", digest, at=later),))
    s = d.status
    assert s.phase is RunPhase.EXECUTING
    step = s.steps[0]
    assert step.phase is StepPhase.RUNNING
    assert [x.job_name for x in d.start_steps] == ["r1-sync-a1"]
    rec = step.approval
    assert rec is not None
    assert rec.state == "approved"
    assert [(x.approver, x.decision, x.ts, x.approval) for x in rec.decisions] == [
        ("alice", "approved", later, "a1")
    ]
    assert [(u.name, u.status["outcome"]) for u in d.approval_updates] == [("a1", "accepted")]
    assert [(a.actor, a.action) for a in d.audit] == [("alice", "approval.approved")]
    assert "approval:sync:approved" in keys(d)
    # The next reconcile, with the Approval answered, changes nothing.
    assert decide(then(run, d), now=later + timedelta(seconds=4), jobs={}).start_steps


def test_rejections_are_distinguishable() -> None:
    run, d0 = waiting_run(approvers=["alice"])
    digest = d0.status.steps[0].approval.digest  # type: ignore[union-attr]
    d = decide(
        run,
        approvals=(
            approval("wrong-digest", "0" * 64),
            approval("stranger", digest, approver="mallory"),
            approval("no-such-step", digest, step="nope"),
            approval("not-waiting", digest, step="sync", approver="alice"),
        ),
    )
    outcomes = {u.name: (u.status["outcome"], u.status["reason"]) for u in d.approval_updates}
    assert outcomes["wrong-digest"] == ("rejected", "DigestMismatch")
    assert outcomes["stranger"] == ("rejected", "NotAnApprover")
    assert outcomes["no-such-step"] == ("rejected", "StepNotFound")
    assert outcomes["not-waiting"] == ("accepted", "Accepted")
    # alice answering again: AlreadyAnswered.
    again = decide(then(run, d), approvals=(approval("twice", digest, approver="alice"),))
    assert again.approval_updates[0].status["reason"] in (
        "AlreadyAnswered",
        "StepNotAwaitingApproval",
    )


def test_double_answer_by_the_same_approver_is_rejected() -> None:
    run, d0 = waiting_run(quorum=2)
    digest = d0.status.steps[0].approval.digest  # type: ignore[union-attr]
    d1 = decide(run, approvals=(approval("a1", digest),))
    assert d1.status.phase is RunPhase.AWAITING_APPROVAL  # quorum 2
    d2 = decide(then(run, d1), approvals=(approval("a2", digest),))
    assert d2.approval_updates[0].status["reason"] == "AlreadyAnswered"
    assert d2.status.phase is RunPhase.AWAITING_APPROVAL
    d3 = decide(then(run, d1), approvals=(approval("b1", digest, approver="bob"),))
    assert d3.status.phase is RunPhase.EXECUTING


def test_denial_fails_the_run_or_skips_the_step() -> None:
    run, d0 = waiting_run()
    digest = d0.status.steps[0].approval.digest  # type: ignore[union-attr]
    d = decide(run, approvals=(approval("no", digest, decision="denied"),))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "ApprovalDenied"
    assert "denied by alice" in (d.status.message or "")
    assert d.start_steps == ()
    assert [a.action for a in d.audit] == ["approval.denied"]
    assert "approval:sync:denied" in keys(d)

    run2 = run_obj(plan=[SYNC, SEARCH], approvalPolicy={**NEEDS_APPROVAL, "onDeny": "skip"})
    d1 = decide(run2)
    digest2 = d1.status.steps[0].approval.digest  # type: ignore[union-attr]
    d2 = decide(then(run2, d1), approvals=(approval("no", digest2, decision="denied"),))
    assert [s.phase for s in d2.status.steps] == [StepPhase.SKIPPED, StepPhase.RUNNING]
    assert d2.status.phase is RunPhase.EXECUTING


def test_unanswered_request_expires() -> None:
    run, d0 = waiting_run(timeoutSeconds=60)
    assert d0.wake_at == T0 + timedelta(seconds=60)
    assert decide(run, now=T0 + timedelta(seconds=59)).idle
    d = decide(run, now=T0 + timedelta(seconds=60))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "ApprovalExpired"
    assert d.status.steps[0].approval.state == "expired"  # type: ignore[union-attr]
    assert [(a.actor, a.action) for a in d.audit] == [("system:sba-operator", "approval.expired")]
    assert "approval:sync:expired" in keys(d)


def test_finished_run_rejects_late_answers() -> None:
    run, d0 = waiting_run(timeoutSeconds=60)
    done = then(run, decide(run, now=T0 + timedelta(seconds=61)))
    digest = d0.status.steps[0].approval.digest  # type: ignore[union-attr]
    d = decide(done, approvals=(approval("late", digest),))
    assert d.approval_updates[0].status["reason"] == "StepNotAwaitingApproval"
    assert d.status.phase is RunPhase.FAILED


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_deletes_the_running_job_and_records_who() -> None:
    run = run_obj(plan=[SEARCH])
    d0 = decide(run)
    running = then(run, d0)
    running["spec"]["cancel"] = {"requestedBy": "alice", "reason": "wrong prompt"}
    active = job("r1-look-a1", "look", 1, JobState.ACTIVE)
    d = decide(running, jobs={active.name: active}, now=T0 + timedelta(seconds=2))
    s = d.status
    assert s.phase is RunPhase.CANCELLED
    assert s.reason == "Cancelled"
    assert s.message == "cancelled by alice: wrong prompt"
    assert s.cancellation is not None
    assert s.cancellation.requested_by == "alice"
    assert s.steps[0].phase is StepPhase.CANCELLED
    assert d.delete_jobs == ("r1-look-a1",)
    assert d.start_steps == ()
    assert [(a.actor, a.action) for a in d.audit] == [("alice", "run.cancelled")]
    assert d.released_slot
    assert decide(then(running, d), jobs={}).idle


def test_cancel_while_waiting_for_approval() -> None:
    run, _ = waiting_run()
    run["spec"]["cancel"] = {"requestedBy": "bob"}
    d = decide(run)
    assert d.status.phase is RunPhase.CANCELLED
    assert d.status.steps[0].phase is StepPhase.CANCELLED


# -- retries and deadlines ---------------------------------------------------------------------


def test_transient_failure_is_retried_after_a_backoff_then_succeeds() -> None:
    run = run_obj(plan=[SEARCH], retry={"maxAttempts": 3, "backoffBaseSeconds": 4, "jitter": 0})
    d0 = decide(run)
    r = then(run, d0)
    failed = job(
        "r1-look-a1", "look", 1, JobState.FAILED, reason="BackoffLimitExceeded", message="exit 1"
    )
    d1 = decide(r, jobs={failed.name: failed}, now=T0 + timedelta(seconds=10))
    step = d1.status.steps[0]
    assert step.phase is StepPhase.BACKOFF
    assert step.next_attempt_at == T0 + timedelta(seconds=14)
    assert d1.wake_at == step.next_attempt_at
    assert d1.status.phase is RunPhase.EXECUTING
    assert "step:look:1:retrying" in keys(d1)
    r = then(r, d1)
    assert decide(r, jobs={failed.name: failed}, now=T0 + timedelta(seconds=13)).idle
    d2 = decide(r, jobs={failed.name: failed}, now=T0 + timedelta(seconds=14))
    assert d2.status.steps[0].attempts == 2
    assert [x.job_name for x in d2.start_steps] == ["r1-look-a2"]
    r = then(r, d2)
    ok = job("r1-look-a2", "look", 2, JobState.SUCCEEDED)
    call = ObservedToolCall(id="c2", success=True, result={"query": "refunds", "hits": []})
    d3 = decide(
        r,
        jobs={failed.name: failed, ok.name: ok},
        tool_calls={("look", 2): call},
        now=T0 + timedelta(seconds=20),
    )
    assert d3.status.phase is RunPhase.COMPLETED
    assert d3.status.steps[0].attempts == 2


def test_permanent_failure_is_not_retried() -> None:
    run = run_obj(plan=[SEARCH])
    r = then(run, decide(run))
    failed = job("r1-look-a1", "look", 1, JobState.FAILED, reason="PodFailurePolicy")
    call = ObservedToolCall(id="c1", success=False, error="params invalid")
    d = decide(r, jobs={failed.name: failed}, tool_calls={("look", 1): call})
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "StepFailed"
    assert d.status.steps[0].attempts == 1
    assert d.dead_letters == ()


def test_exhausted_retries_dead_letter_the_step() -> None:
    run = run_obj(plan=[SEARCH], retry={"maxAttempts": 2, "backoffBaseSeconds": 1, "jitter": 0})
    r = then(run, decide(run))
    f1 = job("r1-look-a1", "look", 1, JobState.FAILED, reason="BackoffLimitExceeded")
    r = then(r, decide(r, jobs={f1.name: f1}, now=T0 + timedelta(seconds=1)))
    r = then(r, decide(r, jobs={f1.name: f1}, now=T0 + timedelta(seconds=3)))
    f2 = job(
        "r1-look-a2",
        "look",
        2,
        JobState.FAILED,
        reason="BackoffLimitExceeded",
        message="gateway unreachable",
    )
    d = decide(r, jobs={f1.name: f1, f2.name: f2}, now=T0 + timedelta(seconds=9))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "StepDeadLettered"
    step = d.status.steps[0]
    assert (step.attempts, step.dead_lettered, step.max_attempts) == (2, True, 2)
    assert "gateway unreachable" in (step.error or "")
    assert [(x.step_id, x.attempts) for x in d.dead_letters] == [("look", 2)]


def test_plan_step_retry_overrides_the_spec_default() -> None:
    step = {**SEARCH, "retry": {"maxAttempts": 1}}
    run = run_obj(plan=[step], retry={"maxAttempts": 5})
    r = then(run, decide(run))
    f1 = job("r1-look-a1", "look", 1, JobState.FAILED, reason="BackoffLimitExceeded")
    assert decide(r, jobs={f1.name: f1}).status.reason == "StepDeadLettered"


def test_step_timeout_sets_the_jobs_deadline_and_the_operator_backstop() -> None:
    run = run_obj(plan=[{**SEARCH, "timeoutSeconds": 30}], retry={"maxAttempts": 1})
    d = decide(run)
    assert d.start_steps[0].job["spec"]["activeDeadlineSeconds"] == 30
    step = d.status.steps[0]
    assert step.deadline_at == T0 + timedelta(seconds=60)  # 30 s + 30 s grace
    r = then(run, d)
    active = job("r1-look-a1", "look", 1, JobState.ACTIVE)
    d2 = decide(r, jobs={active.name: active}, now=T0 + timedelta(seconds=60))
    assert d2.delete_jobs == ("r1-look-a1",)
    assert d2.status.reason == "StepDeadLettered"
    assert "StepDeadlineExceeded" in (d2.status.steps[0].error or "")


def test_run_deadline_counts_while_waiting_for_approval() -> None:
    run = run_obj(plan=[SYNC], approvalPolicy=NEEDS_APPROVAL, deadlineSeconds=120)
    d0 = decide(run)
    assert d0.status.deadline_at == T0 + timedelta(seconds=120)
    assert d0.wake_at == T0 + timedelta(seconds=120)  # before the approval's expiry
    d = decide(then(run, d0), now=T0 + timedelta(seconds=120))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "DeadlineExceeded"


def test_run_deadline_stops_a_running_job() -> None:
    run = run_obj(plan=[SEARCH], deadlineSeconds=10)
    r = then(run, decide(run))
    active = job("r1-look-a1", "look", 1, JobState.ACTIVE)
    d = decide(r, jobs={active.name: active}, now=T0 + timedelta(seconds=11))
    assert d.status.reason == "DeadlineExceeded"
    assert d.delete_jobs == ("r1-look-a1",)
    assert d.status.steps[0].phase is StepPhase.FAILED


# -- per-tenant concurrency --------------------------------------------------------------------


def peer(name: str, minute: int, phase: RunPhase, uid: str | None = None) -> PeerRun:
    return PeerRun(
        name=name, uid=uid or f"uid-{name}", created_at=T0.replace(minute=minute), phase=phase
    )


def test_run_waits_in_a_fifo_queue_when_the_tenant_is_at_its_limit() -> None:
    run = run_obj(plan=[SEARCH])  # created 11:58
    limited = tenant(max_concurrent_runs=1)
    busy = (peer("old", 50, RunPhase.EXECUTING), peer("r1", 58, RunPhase.PENDING, UID))
    d = decide(run, tenant=limited, peers=busy)
    assert d.status.phase is RunPhase.PENDING
    assert d.status.reason == "Queued"
    assert d.status.queue_position == 1
    assert "queued" in keys(d)
    assert d.start_steps == ()
    # An older pending run goes first.
    ahead = (*busy, peer("older", 55, RunPhase.PENDING))
    assert decide(run, tenant=limited, peers=ahead).status.queue_position == 2
    # Slot free, but an older run is still pending: it has the slot.
    free = (peer("old", 50, RunPhase.COMPLETED), peer("older", 55, RunPhase.PENDING))
    assert decide(run, tenant=limited, peers=free).status.queue_position == 2
    # Slot free and first in line: admitted.
    d2 = decide(run, tenant=limited, peers=(peer("old", 50, RunPhase.COMPLETED),))
    assert d2.status.phase is RunPhase.EXECUTING
    assert d2.status.queue_position is None


def test_terminal_run_releases_its_slot() -> None:
    run = run_obj(plan=[SEARCH])
    r = then(run, decide(run))
    ok = job("r1-look-a1", "look", 1, JobState.SUCCEEDED)
    call = ObservedToolCall(id="c", success=True, result={"query": "q", "hits": []})
    assert decide(r, jobs={ok.name: ok}, tool_calls={("look", 1): call}).released_slot


# -- continue (user input) ---------------------------------------------------------------------


def test_user_input_step_waits_for_spec_inputs_and_becomes_the_result() -> None:
    ask = {"id": "ask", "tool": "user.input", "params": {"prompt": "Which region?"}}
    run = run_obj(plan=[ask, SEARCH])
    d0 = decide(run)
    assert d0.status.phase is RunPhase.EXECUTING
    assert d0.status.steps[0].phase is StepPhase.AWAITING_INPUT
    assert d0.status.reason == "AwaitingInput"
    assert d0.start_steps == ()
    assert "step:ask:awaiting_input" in keys(d0)
    r = then(run, d0)
    assert decide(r).idle
    r["spec"]["inputs"] = {"ask": "EMEA"}
    d1 = decide(r)
    assert [(x.step_id, x.value) for x in d1.record_inputs] == [("ask", "EMEA")]
    assert d1.status.steps[0].phase is StepPhase.RUNNING
    r = then(r, d1)
    call = ObservedToolCall(id="c-ask", success=True, result={"value": "EMEA"})
    d2 = decide(r, tool_calls={("ask", 1): call})
    assert d2.status.steps[0].phase is StepPhase.SUCCEEDED
    assert d2.status.steps[0].result_ref == "c-ask"
    assert [x.job_name for x in d2.start_steps] == ["r1-look-a1"]
