"""Pure decisions about quotas and the driver's planner: rate-limited steps, stored plans,
the token quota, and the planner fallback's event."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sba_core.events import EventType
from sba_core.models.run import RunPhase, StepPhase
from sba_core.planning import Plan, PlannedStep
from sba_operator.reconcile import Decision, Observation, decide_run
from sba_operator.reconcile.admission import tenant_view
from sba_operator.reconcile.model import PlanRefusal, RateLimited
from tests.unit.test_reconcile import ACME, REGISTRY, T0, TOOLS, agentrun, applied

LLM_PLAN = Plan(
    steps=(
        PlannedStep("find", "knowledge.search", {"query": "refund policy", "topK": 3}),
        PlannedStep(
            "write",
            "render.document",
            {"title": "Refunds", "locale": "en", "sources": ["find"]},
        ),
    ),
    planner="llm",
    tokens_used=150,
    model="stub-model",
)


def decide(run: dict[str, Any], now: Any = T0, **obs: Any) -> Decision:
    return decide_run(Observation(run=run, now=now, tenant=ACME, **obs), REGISTRY, TOOLS)


def test_a_step_without_a_slot_stays_pending_and_wakes_at_retry_at() -> None:
    run = agentrun()
    first = decide(run)
    assert [s.step_id for s in first.start_steps] == ["search"]
    assert first.start_steps[0].fresh
    retry = T0 + timedelta(seconds=42)
    limited = decide(run, rate_limit=RateLimited("search", 1, retry, per_minute=2))
    assert limited.start_steps == ()
    step = limited.status.steps[0]
    assert step.phase is StepPhase.PENDING
    assert step.attempts == 0
    assert step.next_attempt_at == retry
    assert limited.status.reason == "RateLimited"
    assert "toolCallsPerMinute=2" in (limited.status.message or "")
    assert limited.wake_at == retry
    (event,) = [e for e in limited.events if e.type is EventType.RATE_LIMITED]
    assert event.payload["retryAt"] == retry.isoformat()
    assert event.payload["stepId"] == "search"
    assert event.dedupe_key == f"step:search:1:rate_limited:{retry.isoformat()}"
    assert [k.reason for k in limited.kube_events if k.reason == "RateLimited"]

    # Before retryAt nothing happens (a fixpoint, no polling); at retryAt the step starts.
    waiting = applied(run, limited)
    assert decide(waiting, now=T0 + timedelta(seconds=10)).idle
    later = decide(waiting, now=retry)
    assert [s.step_id for s in later.start_steps] == ["search"]
    assert later.status.steps[0].phase is StepPhase.RUNNING
    assert later.status.steps[0].next_attempt_at is None
    assert later.status.reason is None


def test_a_recreated_job_is_not_a_new_attempt() -> None:
    run = agentrun()
    started = applied(run, decide(run))
    again = decide(started)  # the Job is missing: re-created, not a fresh attempt
    assert [(s.step_id, s.attempt, s.fresh) for s in again.start_steps] == [("search", 1, False)]


def test_quotas_are_read_from_the_tenant() -> None:
    view = tenant_view(
        {
            "metadata": {"name": "acme"},
            "spec": {"quotas": {"toolCallsPerMinute": 2, "tokensPerDay": 500}},
        }
    )
    assert view is not None
    assert (view.tool_calls_per_minute, view.tokens_per_day) == (2, 500)


def test_with_the_llm_planner_the_run_waits_in_planning_for_the_drivers_plan() -> None:
    run = agentrun()
    first = decide(run, await_plan=True)
    assert first.status.phase is RunPhase.PLANNING
    assert first.needs_plan
    assert first.record_run  # the run row exists before its plan is stored
    assert first.start_steps == ()
    planning = applied(run, first)
    planned = decide(planning, plan=LLM_PLAN)
    assert not planned.needs_plan
    assert planned.status.phase is RunPhase.EXECUTING
    assert [s.id for s in planned.status.steps] == ["find", "write"]
    assert planned.status.usage.tokens == 150
    assert planned.start_steps[0].params == {"query": "refund policy", "topK": 3}
    ready = next(e for e in planned.events if e.type is EventType.PLAN_READY)
    assert ready.payload["planner"] == "llm"
    assert ready.payload["model"] == "stub-model"
    assert ready.payload["tokensUsed"] == 150
    assert not [e for e in planned.events if e.type is EventType.PLAN_FALLBACK]
    # Later reconciles follow the stored plan, not the builtin planner's.
    executing = applied(planning, planned)
    again = decide(executing, plan=LLM_PLAN)  # its Job is not observed: re-created
    assert [(s.step_id, dict(s.params), s.fresh) for s in again.start_steps] == [
        ("find", {"query": "refund policy", "topK": 3}, False)
    ]
    assert again.status.phase is RunPhase.EXECUTING


def test_a_fallback_is_recorded_with_its_reasons() -> None:
    run = applied(agentrun(), decide(agentrun(), await_plan=True))
    fallback = replace(
        LLM_PLAN,
        planner="builtin",
        model=None,
        notes=("model m1: the answer is not JSON", "planned by the builtin planner instead"),
    )
    decision = decide(run, plan=fallback)
    (event,) = [e for e in decision.events if e.type is EventType.PLAN_FALLBACK]
    assert event.payload["reasons"][0] == "model m1: the answer is not JSON"
    assert event.payload["planner"] == "builtin"
    assert decision.status.phase is RunPhase.EXECUTING


def test_token_quota_exceeded_fails_the_run_with_the_reason() -> None:
    run = applied(agentrun(), decide(agentrun(), await_plan=True))
    refusal = PlanRefusal("TokenQuotaExceeded", "tenant 'acme' has used 500 of its 500 tokens")
    decision = decide(run, plan_refusal=refusal)
    assert decision.status.phase is RunPhase.FAILED
    assert decision.status.reason == "TokenQuotaExceeded"
    assert "500 of its 500" in (decision.status.message or "")
    planned = next(c for c in decision.status.conditions if c.type == "Planned")
    assert (planned.status, planned.reason) == ("False", "TokenQuotaExceeded")
    assert decision.start_steps == ()


def test_an_explicit_plan_never_waits_for_the_llm() -> None:
    plan = [{"id": "only", "tool": "knowledge.search", "params": {"query": "q"}}]
    run = agentrun({"tenant": "acme", "prompt": "x", "plan": plan})
    decision = decide(run, await_plan=True)
    assert decision.status.phase is RunPhase.EXECUTING
    assert not decision.needs_plan


def test_planner_and_metrics_settings() -> None:
    from sba_operator.settings import PlannerKind, Settings, SettingsError

    base = {"DATABASE_URL": "postgresql://x/y", "SBA_STEP_TOKEN_SECRET": "k"}
    default = Settings.from_env(base)
    assert default.planner.kind is PlannerKind.BUILTIN
    assert default.metrics.port == 9090
    assert default.quotas.tool_calls_window_seconds == 60
    no_key = Settings.from_env({**base, "SBA_PLANNER": "llm"})
    assert no_key.planner.kind is PlannerKind.BUILTIN  # llm only with a key
    llm = Settings.from_env(
        {
            **base,
            "SBA_PLANNER": "LLM",
            "OPENAI_API_KEY": "sk-x",
            "SBA_LLM_BASE_URL": "http://llm.test/v1/",
            "SBA_LLM_FALLBACK_MODEL": "small",
            "SBA_OPERATOR_METRICS_PORT": "0",
        }
    )
    assert llm.planner.kind is PlannerKind.LLM
    assert llm.planner.base_url == "http://llm.test/v1"
    assert (llm.planner.model, llm.planner.fallback_model) == ("gpt-4o-mini", "small")
    assert "sk-x" not in repr(llm.planner)
    assert llm.metrics.port == 0
    with pytest.raises(SettingsError, match="SBA_PLANNER"):
        Settings.from_env({**base, "SBA_PLANNER": "magic"})
