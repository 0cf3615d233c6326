"""The pure run reconcile: (AgentRun, Jobs, tool-call rows, Approvals, peers) -> what to do next.

`decide_run` is level-triggered and a fixpoint: it advances the run as far as
the observation allows and, given the state it produced, decides nothing more.
Every phase change goes through `sba_core.lifecycle.fire`. Steps run one at a
time, in order; before each step the approval policy is consulted, a
`user.input` step waits for `spec.inputs`, and a transient failure is retried
after a backoff. Time-based changes (backoff over, approval expired, deadline
passed) are decided from status timestamps against `Observation.now`, and
`Decision.wake_at` says when the next one is due, so one scheduler can wake the
run even after an operator restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from sba_core import agent_loop, group
from sba_core import approvals as policy
from sba_core.events import EventLevel, EventType, NewRunEvent
from sba_core.lifecycle import Trigger, fire, holds_slot, is_terminal
from sba_core.models.approval import (
    ApprovalOutcome,
    ApprovalPolicy,
    ApprovalSpec,
    ApprovalState,
    ApprovalStatus,
    OnOutcome,
    RejectReason,
)
from sba_core.models.run import (
    MAX_ANSWER_CHARS,
    MAX_SUMMARY_CHARS,
    AgentRunSpec,
    AgentRunStatus,
    Cancellation,
    Condition,
    RetryPolicy,
    RunMode,
    RunPhase,
    RunResult,
    StepPhase,
    StepStatus,
)
from sba_core.planning import (
    BuiltinPlanner,
    Plan,
    PlannedStep,
    PlanningError,
    plannable_registry,
    validate_steps,
)
from sba_core.retry import FailureKind, classify_job_failure, next_attempt_at, should_retry
from sba_core.step_token import StepClaims
from sba_core.summaries import answer_of, artifact_id_of, clip, summarize_result
from sba_core.tools.registry import ToolRegistry, ToolSpec
from sba_operator.reconcile.admission import admit_run, planned_tools
from sba_operator.reconcile.jobs import (
    RunRef,
    build_job,
    job_name,
    labels_match,
    token_secret_name,
)
from sba_operator.reconcile.model import (
    ApprovalUpdate,
    AuditEntry,
    DeadLetter,
    Decision,
    JobState,
    KubeEvent,
    Observation,
    ObservedApproval,
    ObservedJob,
    ObservedToolCall,
    RateLimited,
    RecordInput,
    StartStep,
    parse_time,
    termination_detail,
)
from sba_operator.settings import ToolSettings

# Reasons a run (status.reason) or a step failed.
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_TENANT_MISMATCH: Final = "TenantMismatch"
REASON_TENANT_SUSPENDED: Final = "TenantSuspended"
REASON_PLANNING_FAILED: Final = "PlanningFailed"
REASON_STEP_FAILED: Final = "StepFailed"
REASON_DEAD_LETTERED: Final = "StepDeadLettered"
REASON_COMPLETED: Final = "Completed"
REASON_NO_RESULT: Final = "NoResult"
REASON_JOB_CONFLICT: Final = "JobNameConflict"
REASON_QUEUED: Final = "Queued"
REASON_CANCELLED: Final = "Cancelled"
REASON_DEADLINE: Final = "DeadlineExceeded"
REASON_STEP_DEADLINE: Final = "StepDeadlineExceeded"
REASON_APPROVAL_DENIED: Final = "ApprovalDenied"
REASON_APPROVAL_EXPIRED: Final = "ApprovalExpired"
REASON_AWAITING_APPROVAL: Final = "AwaitingApproval"
REASON_AWAITING_INPUT: Final = "AwaitingInput"
REASON_RATE_LIMITED: Final = "RateLimited"
REASON_TOKEN_QUOTA: Final = "TokenQuotaExceeded"
REASON_LOOP_LIMIT: Final = "MaxStepsExceeded"

COND_PLANNED: Final = "Planned"
COND_SUCCEEDED: Final = "Succeeded"
COND_PROCESSED: Final = "Processed"
"""An Approval's condition: True once the operator has answered it (accepted or rejected)."""

SYSTEM_ACTOR: Final = "system:sba-operator"
UNKNOWN_ACTOR: Final = "unknown"
STEP_DEADLINE_GRACE: Final = timedelta(seconds=30)
"""The Job controller enforces activeDeadlineSeconds; the operator steps in only this much later
(a Job that never started, a controller that is down)."""

MAX_STATUS_PARAMS_CHARS: Final = 2048
_MAX_PARAM_STRING: Final = 256


def artifact_url(run_id: str, artifact_id: str) -> str:
    return f"/api/v1/runs/{run_id}/artifacts/{artifact_id}"


def compact_params(
    params: Mapping[str, Any], limit: int = MAX_STATUS_PARAMS_CHARS
) -> dict[str, Any]:
    """Params small enough for status: long strings clipped, a huge whole replaced by a note."""

    def shrink(value: Any) -> Any:
        if isinstance(value, str) and len(value) > _MAX_PARAM_STRING:
            return value[: _MAX_PARAM_STRING - 1] + "…"
        if isinstance(value, dict):
            return {str(k): shrink(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shrink(v) for v in value[:50]]
        return value

    small = shrink(dict(params))
    assert isinstance(small, dict)
    size = len(json.dumps(small, default=str))
    if size > limit:
        return {"truncated": True, "sizeChars": size, "keys": sorted(small)[:20]}
    return small


def _now(obs: Observation) -> datetime:
    return obs.now.replace(microsecond=0)


def parse_status(raw: Any) -> AgentRunStatus:
    """The stored status, tolerating fields the server defaulted; empty when unreadable."""
    if not isinstance(raw, Mapping) or not raw:
        return AgentRunStatus()
    try:
        return AgentRunStatus.model_validate(dict(raw))
    except ValidationError:
        return AgentRunStatus()


def set_condition(
    conditions: list[Condition], type_: str, status: str, reason: str, message: str, now: datetime
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime moves only when the status flips."""
    message = clip(message, MAX_SUMMARY_CHARS)
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        changed = cond.status != status
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now if changed else cond.last_transition_time,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_, status=status, reason=reason, message=message, last_transition_time=now
            )
        )
    return out


def _tool_facts(spec: ToolSpec) -> policy.ToolFacts:
    return policy.ToolFacts(
        name=str(spec.name),
        side_effect=spec.side_effect,
        scopes=tuple(spec.scopes),
        cost_estimate=spec.cost_estimate,
    )


def _scope_of(params: Mapping[str, Any]) -> list[str]:
    """The data a step touches, for the approval request (seed 000's `scope`)."""
    raw = params.get("scope")
    if isinstance(raw, list):
        return [str(x) for x in raw]
    return sorted(k for k, v in params.items() if isinstance(v, list) and v and k != "sources")


class _PlanPending(Exception):
    """The driver's planner has not planned the run yet (Observation.await_plan)."""


class _Run:
    """Mutable scratch state of one decision."""

    def __init__(self, obs: Observation, registry: ToolRegistry, tools: ToolSettings) -> None:
        self.obs = obs
        self.registry = registry
        self.tools = tools
        self.now = _now(obs)
        meta = obs.run.get("metadata") or {}
        self.uid = str(meta.get("uid", ""))
        self.name = str(meta.get("name", ""))
        self.namespace = str(meta.get("namespace", ""))
        self.generation = meta.get("generation")
        self.old = parse_status(obs.run.get("status"))
        self.status = self.old.model_copy(deep=True)
        self.events: list[NewRunEvent] = []
        self.kube_events: list[KubeEvent] = []
        self.start_steps: list[StartStep] = []
        self.delete_secrets: list[str] = []
        self.delete_jobs: list[str] = []
        self.record_inputs: list[RecordInput] = []
        self.approval_updates: list[ApprovalUpdate] = []
        self.audit: list[AuditEntry] = []
        self.dead_letters: list[DeadLetter] = []
        self.answered: set[str] = set()
        self.spec: AgentRunSpec | None = None
        self.tenant: str | None = None
        self._plan: Plan | None = None
        self.needs_plan = False

    # -- recording ------------------------------------------------------------------------

    def event(
        self,
        key: str,
        type_: EventType,
        payload: dict[str, Any] | None = None,
        level: EventLevel = EventLevel.INFO,
    ) -> None:
        self.events.append(
            NewRunEvent(dedupe_key=key, type=type_, level=level, payload=payload or {})
        )

    def kube(self, reason: str, message: str, warning: bool = False) -> None:
        self.kube_events.append(
            KubeEvent("Warning" if warning else "Normal", reason, clip(message, 1024))
        )

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.now
        )

    def fire(self, trigger: Trigger) -> None:
        self.status.phase = fire(self.status.phase, trigger)

    def record_audit(self, actor: str, action: str, payload: dict[str, Any]) -> None:
        if self.tenant is not None:
            self.audit.append(
                AuditEntry(
                    actor=actor,
                    action=action,
                    target=f"agentrun/{self.namespace}/{self.name}",
                    payload={"runId": self.uid, **payload},
                )
            )

    # -- terminal outcomes ------------------------------------------------------------------

    def _stop_steps(self, phase: StepPhase, error: str) -> None:
        """Settle every unfinished step (cancel, deadline): running Jobs are deleted."""
        for step in self.status.steps:
            if step.phase in (StepPhase.SUCCEEDED, StepPhase.SKIPPED, StepPhase.FAILED):
                continue
            if step.phase is StepPhase.CANCELLED:
                continue
            if step.phase is StepPhase.RUNNING and step.job_name:
                self.delete_jobs.append(step.job_name)
                self.delete_secrets.append(token_secret_name(step.job_name))
            started = step.phase is not StepPhase.PENDING
            step.phase = phase if started else StepPhase.CANCELLED
            step.next_attempt_at = None
            step.deadline_at = None
            if started:
                step.finished_at = self.now
                step.error = clip(error)
        for name, job in self.obs.jobs.items():
            if job.state is JobState.ACTIVE and name not in self.delete_jobs:
                self.delete_jobs.append(name)

    def fail(self, reason: str, message: str, trigger: Trigger = Trigger.FAILED) -> None:
        message = clip(message)
        self.fire(trigger)
        self.status.reason = reason
        self.status.message = message
        self.status.finished_at = self.now
        self.status.queue_position = None
        self._finish_usage()
        self.condition(COND_SUCCEEDED, "False", reason, message)
        self.event(
            "phase:failed",
            EventType.FAILED,
            {"reason": reason, "message": message},
            level=EventLevel.ERROR,
        )
        self.kube("Failed", f"{reason}: {message}", warning=True)

    def complete(self) -> None:
        self.fire(Trigger.STEPS_DONE)
        done = [s for s in self.status.steps if s.phase is StepPhase.SUCCEEDED]
        last = done[-1] if done else None
        result = self.status.result or RunResult()
        result.summary = (last.summary if last and last.summary else None) or (
            f"completed {len(self.status.steps)} step(s)"
        )
        self.status.result = result
        self.status.reason = REASON_COMPLETED
        skipped = len(self.status.steps) - len(done)
        self.status.message = clip(
            f"all {len(self.status.steps)} step(s) succeeded"
            if not skipped
            else f"{len(done)} step(s) succeeded, {skipped} skipped"
        )
        self.status.finished_at = self.now
        self.status.current_step = None
        self._finish_usage()
        self.condition(COND_SUCCEEDED, "True", REASON_COMPLETED, self.status.message)
        self.event("phase:completed", EventType.COMPLETED, result.wire())
        self.kube("Completed", f"run completed: {result.summary}")

    def cancel(self) -> None:
        assert self.spec is not None
        assert self.spec.cancel is not None
        who = self.spec.cancel.requested_by or UNKNOWN_ACTOR
        why = self.spec.cancel.reason
        self._stop_steps(StepPhase.CANCELLED, f"cancelled by {who}")
        self.fire(Trigger.CANCELLED)
        message = clip(f"cancelled by {who}" + (f": {why}" if why else ""))
        self.status.reason = REASON_CANCELLED
        self.status.message = message
        self.status.cancellation = Cancellation(requested_by=who, reason=why, at=self.now)
        self.status.finished_at = self.now
        self.status.current_step = None
        self.status.queue_position = None
        self._finish_usage()
        self.condition(COND_SUCCEEDED, "False", REASON_CANCELLED, message)
        self.event(
            "phase:cancelled",
            EventType.CANCELLED,
            {"requestedBy": who, "reason": why, "deletedJobs": sorted(self.delete_jobs)},
            level=EventLevel.WARNING,
        )
        self.kube("Cancelled", message, warning=True)
        self.record_audit(who, "run.cancelled", {"reason": why})

    def deadline_exceeded(self) -> None:
        assert self.status.deadline_at is not None
        message = (
            f"the run's deadline ({self.status.deadline_at.isoformat()}) passed"
            f" in phase {self.status.phase}"
        )
        self._stop_steps(StepPhase.FAILED, f"{REASON_DEADLINE}: {message}")
        self.status.current_step = None
        self.fail(REASON_DEADLINE, message, Trigger.DEADLINE_EXCEEDED)

    def _finish_usage(self) -> None:
        self.status.usage.tool_calls = sum(step.attempts for step in self.status.steps)
        if self.status.started_at is not None and self.status.finished_at is not None:
            seconds = (self.status.finished_at - self.status.started_at).total_seconds()
            self.status.usage.run_seconds = max(seconds, 0.0)

    # -- planning ---------------------------------------------------------------------------

    @property
    def looping(self) -> bool:
        return self.spec is not None and self.spec.mode is RunMode.LOOP

    def plan(self) -> Plan:
        if self._plan is None:
            assert self.spec is not None
            if self.looping:
                # The loop's plan so far: turn 1, then each answered turn's calls and the
                # next turn (recomputed from the stored turn results every time).
                steps = agent_loop.expand(
                    self.obs.turn_results,
                    locale=self.spec.options.locale,
                    max_steps=self.spec.options.max_steps,
                )
                checked = validate_steps(list(steps), self.registry, self.spec.options.max_steps)
                self._plan = Plan(checked, planner="agent")
            elif not self.spec.plan and self.obs.plan is not None:
                self._plan = self.obs.plan  # the plan of record (an LLM's is not reproducible)
            elif not self.spec.plan and self.obs.await_plan:
                raise _PlanPending
            else:
                allowed = self.obs.tenant.allowed_tools if self.obs.tenant else None
                registry = plannable_registry(self.registry, allowed)
                self._plan = BuiltinPlanner(registry).plan_sync(self.spec)
        return self._plan

    def admission_tools(self) -> tuple[str, ...]:
        """The planned tools admission checks; none yet when the driver's planner will plan
        (its model is shown only the tools the tenant allows, and the plan is checked again)."""
        if self.obs.await_plan and self.obs.plan is None and not (self.spec and self.spec.plan):
            return ()
        return planned_tools(self.plan)

    def check_allowed(self, plan: Plan) -> None:
        allowed = self.obs.tenant.allowed_tools if self.obs.tenant else None
        if allowed is None:
            return
        refused = sorted({s.tool for s in plan.steps if s.tool not in allowed})
        if refused:
            raise PlanningError(
                f"tenant {self.tenant!r} may not use {', '.join(refused)};"
                f" allowed: {', '.join(allowed) or 'none'}"
            )

    def planned_step(self, step: StepStatus) -> PlannedStep:
        for planned in self.plan().steps:
            if planned.id == step.id and planned.tool == step.tool:
                return planned
        raise PlanningError(f"step {step.id!r} ({step.tool}) is no longer in the run's plan")

    def retry_policy(self, step: StepStatus) -> RetryPolicy:
        assert self.spec is not None
        for i, planned in enumerate(self.spec.plan or []):
            if (planned.id or f"s{i + 1}") == step.id and planned.retry is not None:
                return planned.retry
        # A user tool's author knows whether its failures are worth another try.
        spec = self.registry.get(step.tool)
        if spec is not None and spec.container is not None and spec.container.retry is not None:
            return spec.container.retry
        return self.spec.retry

    def step_timeout(self, step: StepStatus) -> int:
        assert self.spec is not None
        for i, planned in enumerate(self.spec.plan or []):
            if (planned.id or f"s{i + 1}") == step.id and planned.timeout_seconds is not None:
                return planned.timeout_seconds
        spec = self.registry.get(step.tool)
        if spec is not None and spec.container is not None:
            return spec.timeout_seconds  # the user tool's own deadline
        return self.tools.job.active_deadline_seconds

    # -- the run ----------------------------------------------------------------------------

    def ref(self) -> RunRef:
        assert self.tenant is not None
        return RunRef(uid=self.uid, name=self.name, namespace=self.namespace, tenant=self.tenant)

    def current_step_text(self, step: StepStatus, note: str = "") -> str:
        text = f"{step.index + 1}/{len(self.status.steps)} {step.tool}"
        return f"{text} ({note})" if note else text

    def admit(self, spec: AgentRunSpec) -> bool:
        """Tenant checks before a run is planned; False when the run failed or must wait."""
        expected = group.tenant_namespace(spec.tenant)
        if self.namespace != expected:
            self.fail(
                REASON_TENANT_MISMATCH,
                f"a run of tenant {spec.tenant!r} must live in namespace {expected!r},"
                f" not {self.namespace!r}",
            )
            return False
        refusal = admit_run(spec, self.obs.tenant, self.admission_tools())
        if refusal is None:
            return True
        if refusal.waits:
            self.status.reason = refusal.reason
            self.status.message = clip(refusal.message)
            return False
        self.fail(refusal.reason, refusal.message)
        return False

    def queue_position(self) -> int | None:
        """1-based place in the tenant's FIFO queue when no slot is free; None: admit now."""
        limit = self.obs.tenant.max_concurrent_runs if self.obs.tenant else None
        peers = self.obs.peers
        if limit is None or peers is None:
            return None
        meta = self.obs.run.get("metadata") or {}
        mine = (parse_time(meta.get("creationTimestamp")) or self.now, self.name)
        others = [p for p in peers if p.uid != self.uid]
        active = sum(1 for p in others if holds_slot(p.phase))
        ahead = sum(
            1
            for p in others
            if p.phase is RunPhase.PENDING and not p.cancelled and p.queue_key < mine
        )
        if ahead < limit - active:
            return None
        return ahead + 1

    def queue(self, position: int) -> None:
        assert self.obs.tenant is not None
        limit = self.obs.tenant.max_concurrent_runs
        self.status.reason = REASON_QUEUED
        self.status.queue_position = position
        self.status.message = (
            f"waiting for a slot: tenant {self.tenant!r} is at maxConcurrentRuns={limit};"
            f" position {position} in its queue"
        )
        self.condition(COND_SUCCEEDED, "Unknown", REASON_QUEUED, self.status.message)
        self.event(
            "phase:pending", EventType.PENDING, {"name": self.name, "namespace": self.namespace}
        )
        self.event(
            "queued",
            EventType.QUEUED,
            {"position": position, "maxConcurrentRuns": limit},
        )
        if self.old.reason != REASON_QUEUED:
            self.kube("Queued", self.status.message)

    def start_planning(self) -> None:
        assert self.spec is not None
        self.fire(Trigger.ADMITTED)
        self.status.started_at = self.status.started_at or self.now
        if self.spec.deadline_seconds is not None:
            self.status.deadline_at = self.status.started_at + timedelta(
                seconds=self.spec.deadline_seconds
            )
        self.status.reason = None
        self.status.message = None
        self.status.queue_position = None
        self.condition(COND_SUCCEEDED, "Unknown", "Planning", "planning the run")
        self.event(
            "phase:pending", EventType.PENDING, {"name": self.name, "namespace": self.namespace}
        )
        self.event("phase:planning", EventType.PLANNING)

    def finish_planning(self) -> bool:
        refusal = self.obs.plan_refusal
        if refusal is not None:
            self.condition(COND_PLANNED, "False", refusal.reason, refusal.message)
            self.fail(refusal.reason, refusal.message)
            return False
        try:
            plan = self.plan()
            self.check_allowed(plan)
        except _PlanPending:
            self.needs_plan = True  # the driver plans it next, then decides again
            return False
        except PlanningError as exc:
            self.condition(COND_PLANNED, "False", REASON_PLANNING_FAILED, str(exc))
            self.fail(REASON_PLANNING_FAILED, str(exc))
            return False
        self.status.steps = [
            StepStatus(id=s.id, index=i, tool=s.tool, params=compact_params(s.params))
            for i, s in enumerate(plan.steps)
        ]
        self.status.usage.tokens = plan.tokens_used
        by = f"the {plan.planner} planner" + (f" ({plan.model})" if plan.model else "")
        message = f"{len(plan.steps)} step(s) by {by}: " + ", ".join(
            f"{s.id} ({s.tool})" for s in plan.steps
        )
        self.condition(COND_PLANNED, "True", "Planned", message)
        if plan.notes:
            self.event(
                "plan:fallback",
                EventType.PLAN_FALLBACK,
                {
                    "planner": plan.planner,
                    "model": plan.model,
                    "reasons": list(plan.notes),
                    "tokensUsed": plan.tokens_used,
                },
                level=EventLevel.WARNING,
            )
            self.kube(
                "PlannerFallback",
                f"planned by {by} after: " + "; ".join(plan.notes),
                warning=True,
            )
        self.event(
            "plan:ready",
            EventType.PLAN_READY,
            {
                "planner": plan.planner,
                "tokensUsed": plan.tokens_used,
                **({"model": plan.model} if plan.model else {}),
                **({"fallbackReasons": list(plan.notes)} if plan.notes else {}),
                "steps": [{"id": s.id, "tool": s.tool, "params": s.params} for s in plan.steps],
            },
        )
        self.fire(Trigger.PLANNED)
        self.condition(COND_SUCCEEDED, "Unknown", "Executing", "running the plan's steps")
        self.event("phase:executing", EventType.EXECUTING)
        return True

    # -- steps ------------------------------------------------------------------------------

    def start_action(self, step: StepStatus) -> StartStep:
        planned = self.planned_step(step)
        spec = self.registry[step.tool]
        ref = self.ref()
        name = job_name(self.name, step.id, step.attempts)
        return StartStep(
            step_id=step.id,
            index=step.index,
            attempt=step.attempts,
            tool=step.tool,
            tool_version=spec.version,
            params=planned.params,
            job_name=name,
            secret_name=token_secret_name(name),
            job=build_job(
                run=ref,
                step_id=step.id,
                attempt=step.attempts,
                spec=spec,
                tools=self.tools,
                active_deadline_seconds=self.step_timeout(step),
            ),
            claims=StepClaims(
                run_id=self.uid,
                tenant=ref.tenant,
                namespace=self.namespace,
                run_name=self.name,
                step_id=step.id,
                attempt=step.attempts,
                tool=step.tool,
            ),
        )

    def start_step(self, step: StepStatus) -> None:
        """Begin the step's next attempt: adopt its Job when it already exists, else create it."""
        limited = self.obs.rate_limit
        if limited is not None and (limited.step_id, limited.attempt) == (
            step.id,
            step.attempts + 1,
        ):
            self.rate_limited(step, limited)
            return
        step.attempts += 1
        name = job_name(self.name, step.id, step.attempts)
        step.phase = StepPhase.RUNNING
        step.job_name = name
        step.started_at = self.now
        step.finished_at = None
        step.next_attempt_at = None
        step.max_attempts = self.retry_policy(step).max_attempts
        step.deadline_at = (
            self.now + timedelta(seconds=self.step_timeout(step)) + (STEP_DEADLINE_GRACE)
        )
        self.status.current_step = self.current_step_text(step)
        self.status.reason = None
        self.status.message = None
        self.status.usage.tool_calls = sum(s.attempts for s in self.status.steps)
        self.condition(COND_SUCCEEDED, "Unknown", "Executing", f"step {self.status.current_step}")
        existing = self.obs.jobs.get(name)
        if existing is None or not labels_match(
            existing.labels, self.ref(), step.id, step.attempts
        ):
            self.start_steps.append(self.start_action(step))
        self.event(
            f"step:{step.id}:{step.attempts}:started",
            EventType.STEP_STARTED,
            {
                "stepId": step.id,
                "index": step.index,
                "tool": step.tool,
                "attempt": step.attempts,
                "jobName": name,
            },
        )

    def rate_limited(self, step: StepStatus, limited: RateLimited) -> None:
        """No slot in the tenant's tool-call window: the step waits (pending, or in backoff)
        until `retry_at`, when `wake_at` brings the run back to try again."""
        step.next_attempt_at = limited.retry_at
        self.status.current_step = self.current_step_text(step, "rate limited")
        self.status.reason = REASON_RATE_LIMITED
        self.status.message = clip(
            f"tenant {self.tenant!r} is at quotas.toolCallsPerMinute={limited.per_minute}:"
            f" step {step.id!r} ({step.tool}) starts at {limited.retry_at.isoformat()}"
        )
        self.condition(COND_SUCCEEDED, "Unknown", REASON_RATE_LIMITED, self.status.message)
        # One event per refusal (its retryAt), never repeated by a re-run of the same decision.
        self.event(
            f"step:{step.id}:{limited.attempt}:rate_limited:{limited.retry_at.isoformat()}",
            EventType.RATE_LIMITED,
            {
                "stepId": step.id,
                "tool": step.tool,
                "attempt": limited.attempt,
                "scope": "tool_calls",
                "toolCallsPerMinute": limited.per_minute,
                "retryAt": limited.retry_at.isoformat(),
            },
            level=EventLevel.WARNING,
        )
        if self.old.reason != REASON_RATE_LIMITED:
            self.kube("RateLimited", self.status.message, warning=True)

    def step_succeeded(
        self, step: StepStatus, call: ObservedToolCall, job: ObservedJob | None
    ) -> None:
        step.phase = StepPhase.SUCCEEDED
        step.finished_at = self._finished_at(call, job)
        step.summary = summarize_result(step.tool, call.result)
        step.result_ref = call.id
        step.error = None
        step.deadline_at = None
        artifact = artifact_id_of(step.tool, call.result)
        if artifact:
            result = self.status.result or RunResult()
            result.artifact_id = artifact
            result.artifact_url = artifact_url(self.uid, artifact)
            self.status.result = result
        answer = answer_of(step.tool, call.result)
        if answer:
            # The run's answer: the last model step's text (whole in its tool call).
            result = self.status.result or RunResult()
            result.answer = (
                answer if len(answer) <= MAX_ANSWER_CHARS else answer[: MAX_ANSWER_CHARS - 1] + "…"
            )
            result.answer_step = step.id
            self.status.result = result
        self._step_seconds()
        self.event(
            f"step:{step.id}:{step.attempts}:succeeded",
            EventType.STEP_SUCCEEDED,
            {
                "stepId": step.id,
                "index": step.index,
                "tool": step.tool,
                "attempt": step.attempts,
                "summary": step.summary,
                "resultRef": call.id,
                **({"artifactId": artifact} if artifact else {}),
            },
        )
        if step.job_name:
            self.delete_secrets.append(token_secret_name(step.job_name))

    def step_failed(
        self,
        step: StepStatus,
        reason: str,
        error: str,
        job: ObservedJob | None = None,
        call: ObservedToolCall | None = None,
        kind: FailureKind = FailureKind.PERMANENT,
    ) -> None:
        """The attempt failed: retry it after a backoff, dead-letter the step, or fail it."""
        step.phase = StepPhase.FAILED
        step.finished_at = self._finished_at(call, job)
        step.error = clip(f"{reason}: {error}")
        step.deadline_at = None
        if call is not None and call.success is not None:
            step.result_ref = call.id  # the tool reported: its error is stored in full
        self._step_seconds()
        retry = self.retry_policy(step)
        step.max_attempts = retry.max_attempts
        self.event(
            f"step:{step.id}:{step.attempts}:failed",
            EventType.STEP_FAILED,
            {
                "stepId": step.id,
                "index": step.index,
                "tool": step.tool,
                "attempt": step.attempts,
                "reason": reason,
                "error": step.error,
                "retryable": kind is FailureKind.TRANSIENT,
            },
            level=EventLevel.ERROR,
        )
        self.kube("StepFailed", f"step {step.id} ({step.tool}): {step.error}", warning=True)
        if step.job_name:
            self.delete_secrets.append(token_secret_name(step.job_name))
        if should_retry(retry, kind, step.attempts):
            step.phase = StepPhase.BACKOFF
            step.next_attempt_at = next_attempt_at(
                retry, step.attempts, self.now, seed=f"{self.uid}:{step.id}"
            ).replace(microsecond=0)
            self.status.current_step = self.current_step_text(step, "retrying")
            self.event(
                f"step:{step.id}:{step.attempts}:retrying",
                EventType.STEP_RETRYING,
                {
                    "stepId": step.id,
                    "attempt": step.attempts,
                    "nextAttempt": step.attempts + 1,
                    "maxAttempts": retry.max_attempts,
                    "nextAttemptAt": step.next_attempt_at.isoformat(),
                },
                level=EventLevel.WARNING,
            )
        elif kind is FailureKind.TRANSIENT:
            step.dead_lettered = True
            self.dead_letters.append(
                DeadLetter(
                    step_id=step.id,
                    tool=step.tool,
                    attempts=step.attempts,
                    error=step.error,
                    params=dict(step.params),
                )
            )
            self.event(
                f"step:{step.id}:dead_lettered",
                EventType.STEP_DEAD_LETTERED,
                {
                    "stepId": step.id,
                    "tool": step.tool,
                    "attempts": step.attempts,
                    "lastError": step.error,
                },
                level=EventLevel.ERROR,
            )

    def _finished_at(self, call: ObservedToolCall | None, job: ObservedJob | None) -> datetime:
        for candidate in (job.finished_at if job else None, call.finished_at if call else None):
            if candidate is not None:
                return candidate.replace(microsecond=0)
        return self.now

    def _step_seconds(self) -> None:
        total = 0.0
        for s in self.status.steps:
            if s.started_at is not None and s.finished_at is not None:
                total += max((s.finished_at - s.started_at).total_seconds(), 0.0)
        self.status.usage.run_seconds = total

    def observe_running(self, step: StepStatus) -> bool:
        """Fold the running step's Job/result into status; True when the step is settled."""
        assert step.job_name is not None
        job = self.obs.jobs.get(step.job_name)
        call = self.obs.tool_calls.get((step.id, step.attempts))
        if job is not None and not labels_match(job.labels, self.ref(), step.id, step.attempts):
            job = None
        if job is None or job.state is JobState.ACTIVE:
            if call is not None and call.success is not None and job is None:
                # The Job is gone (TTL, deleted) but the tool reported: take its word.
                self._settle_from_call(step, call, None)
                return True
            if step.deadline_at is not None and self.now >= step.deadline_at:
                # The Job outlived its deadline (or never ran): stop it and count a failure.
                if job is not None:
                    self.delete_jobs.append(step.job_name)
                self.step_failed(
                    step,
                    REASON_STEP_DEADLINE,
                    f"no result {self.step_timeout(step)}s after the attempt started",
                    job,
                    call,
                    FailureKind.TRANSIENT,
                )
                return True
            if job is None:
                if step.job_name in self.obs.foreign_jobs:
                    self.step_failed(
                        step,
                        REASON_JOB_CONFLICT,
                        f"Job {step.job_name} exists and does not belong to this run",
                    )
                    return True
                # Level-triggered: the Job should exist; (re)create it, adopting on conflict.
                self.start_steps.append(replace(self.start_action(step), fresh=False))
            return False
        if job.state is JobState.SUCCEEDED:
            if call is not None and call.success is not None:
                self._settle_from_call(step, call, job)
            else:
                self.step_failed(
                    step, REASON_NO_RESULT, "tool exited without reporting a result", job, call
                )
            return True
        # Failed: prefer the tool's own error, then its termination message, then the Job's.
        reported = call is not None and call.success is False
        error = (
            (call.error if call is not None and call.success is False else None)
            or termination_detail(job.termination_message)
            or job.message
            or "the Job failed"
        )
        kind = classify_job_failure(job.reason, reported)
        self.step_failed(step, job.reason or "Failed", error, job, call, kind)
        return True

    def _settle_from_call(
        self, step: StepStatus, call: ObservedToolCall, job: ObservedJob | None
    ) -> None:
        if call.success:
            self.step_succeeded(step, call, job)
        else:
            self.step_failed(
                step, "ToolError", call.error or "the tool reported a failure", job, call
            )

    # -- user input -------------------------------------------------------------------------

    def await_input(self, step: StepStatus) -> bool:
        """A `user.input` step; True when it settled (its value is recorded and observed)."""
        assert self.spec is not None
        value = self.spec.inputs.get(step.id)
        if step.phase is StepPhase.PENDING:
            step.phase = StepPhase.AWAITING_INPUT
            step.started_at = self.now
            prompt = self.planned_step(step).params.get("prompt")
            self.status.current_step = self.current_step_text(step, "waiting for input")
            self.status.reason = REASON_AWAITING_INPUT
            self.status.message = clip(f"step {step.id!r} waits for input: {prompt}")
            self.event(
                f"step:{step.id}:awaiting_input",
                EventType.AWAITING_INPUT,
                {"stepId": step.id, "index": step.index, "prompt": prompt},
            )
            self.kube("AwaitingInput", self.status.message)
        if value is None:
            return False
        spec = self.registry[step.tool]
        if step.phase is StepPhase.AWAITING_INPUT:
            step.phase = StepPhase.RUNNING
            step.attempts = 1
            self.status.reason = None
            self.status.message = None
            self.status.current_step = self.current_step_text(step)
            self.event(
                f"step:{step.id}:input_received",
                EventType.INPUT_RECEIVED,
                {"stepId": step.id, "chars": len(value)},
            )
        call = self.obs.tool_calls.get((step.id, step.attempts))
        if call is not None and call.success:
            self.step_succeeded(step, call, None)
            return True
        # Stored by the driver (idempotently); the next reconcile observes it.
        self.record_inputs.append(
            RecordInput(
                step_id=step.id,
                attempt=step.attempts,
                tool=step.tool,
                tool_version=spec.version,
                value=value,
            )
        )
        return False

    # -- approvals --------------------------------------------------------------------------

    def approval_terms(self, step: StepStatus) -> ApprovalPolicy | None:
        assert self.spec is not None
        tenant_policy = self.obs.tenant.approval_policy if self.obs.tenant else None
        facts = _tool_facts(self.registry[step.tool])
        return policy.effective_policy(tenant_policy, self.spec.approval_policy, facts)

    def resolved_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Params as the tool will act on them: a title taken from a person's earlier answer
        (`titleFrom`) is shown, and approved, as that title."""
        ref = params.get("titleFrom")
        if isinstance(ref, str) and self.spec is not None and ref in self.spec.inputs:
            shown = {k: v for k, v in params.items() if k != "titleFrom"}
            return {**shown, "title": self.spec.inputs[ref]}
        return dict(params)

    def request_approval(self, step: StepStatus, terms: ApprovalPolicy) -> None:
        spec = self.registry[step.tool]
        planned = self.planned_step(step)
        params = self.resolved_params(planned.params)
        digest = policy.approval_digest(
            tool=step.tool,
            params=params,
            run_uid=self.uid,
            step_id=step.id,
            attempt=step.attempts + 1,
        )
        request = policy.new_request(terms, _tool_facts(spec), digest=digest, now=self.now)
        step.approval = request
        step.phase = StepPhase.AWAITING_APPROVAL
        self.fire(Trigger.APPROVAL_REQUIRED)
        self.status.current_step = self.current_step_text(step, "awaiting approval")
        self.status.reason = REASON_AWAITING_APPROVAL
        self.status.message = clip(
            f"step {step.id!r} ({step.tool}) needs approval by {request.expires_at.isoformat()}"
        )
        self.condition(COND_SUCCEEDED, "Unknown", REASON_AWAITING_APPROVAL, self.status.message)
        self.event(
            f"approval:{step.id}:requested",
            EventType.AWAITING_APPROVAL,
            {
                "action": step.tool,
                "costEstimate": request.cost_estimate,
                "scope": _scope_of(params),
                "requires": request.requires,
                "stepId": step.id,
                "attempt": step.attempts + 1,
                "params": compact_params(params),
                "approvers": request.approvers,
                "approverGroups": request.approver_groups,
                "quorum": request.quorum,
                "requestedAt": request.requested_at.isoformat(),
                "expiresAt": request.expires_at.isoformat(),
                "digest": request.digest,
            },
        )
        self.kube("AwaitingApproval", self.status.message)

    def _answer(
        self, approval: ObservedApproval, outcome: ApprovalOutcome, reason: str, msg: str
    ) -> None:
        self.answered.add(approval.name)
        status = ApprovalStatus(
            outcome=outcome,
            reason=reason,
            message=clip(msg),
            run_uid=self.uid,
            processed_at=self.now,
            conditions=set_condition([], COND_PROCESSED, "True", reason, msg, self.now),
        )
        self.approval_updates.append(ApprovalUpdate(approval.name, status.wire()))

    def fold_answers(self, step: StepStatus) -> None:
        """Count the Approvals for the waiting step; reject those that cannot count."""
        request = step.approval
        assert request is not None
        for approval in self.obs.approvals:
            if approval.name in self.answered:
                continue
            answer = _parse_answer(approval)
            if answer is None or answer.step_id != step.id:
                continue
            if any(d.approval == approval.name for d in request.decisions):
                # Recorded before a crash; only the Approval's status is missing.
                self._answer(approval, ApprovalOutcome.ACCEPTED, "Accepted", "counted")
                continue
            problem = policy.check_answer(
                request, answer, waiting=request.state is ApprovalState.PENDING
            )
            if problem is not None:
                code, message = problem
                self._answer(approval, ApprovalOutcome.REJECTED, code, message)
                continue
            ts = approval.created_at.replace(microsecond=0)
            policy.record(request, answer, approval.name, ts)
            self._answer(
                approval,
                ApprovalOutcome.ACCEPTED,
                "Accepted",
                f"{answer.decision} by {answer.approver} counted for step {step.id!r}",
            )
            self.event(
                f"approval:{approval.name}:answered",
                EventType.APPROVAL_ANSWERED,
                {
                    "stepId": step.id,
                    "approver": answer.approver,
                    "decision": str(answer.decision),
                    "reason": answer.reason,
                    "ts": ts.isoformat(),
                },
            )
            self.record_audit(
                answer.approver,
                f"approval.{answer.decision}",
                {
                    "stepId": step.id,
                    "approval": approval.name,
                    "reason": answer.reason,
                    "digest": request.digest,
                    "action": request.action,
                    "ts": ts.isoformat(),
                },
            )

    def settle_approval(self, step: StepStatus) -> bool:
        """Decide the waiting step; True when the run moved on (the loop continues)."""
        request = step.approval
        assert request is not None
        self.fold_answers(step)
        state = policy.tally(request)
        if state is ApprovalState.PENDING and self.now >= request.expires_at:
            state = ApprovalState.EXPIRED
        if state is ApprovalState.PENDING:
            return False
        request.state = state
        request.decided_at = self.now
        payload: dict[str, Any] = {
            "stepId": step.id,
            "action": request.action,
            "digest": request.digest,
            "decisions": [d.wire() for d in request.decisions],
        }
        if state is ApprovalState.APPROVED:
            self.fire(Trigger.APPROVED)
            step.phase = StepPhase.PENDING
            self.status.reason = None
            self.status.message = None
            self.event(f"approval:{step.id}:approved", EventType.APPROVED, payload)
            self.kube("Approved", f"step {step.id} ({step.tool}) approved")
            return True
        denied = state is ApprovalState.DENIED
        outcome = request.on_deny if denied else request.on_expire
        if self.looping:
            outcome = OnOutcome.SKIP  # the model hears of it in its next turn and goes on
        if denied:
            who = next(d for d in request.decisions if d.decision == "denied")
            text = f"denied by {who.approver}" + (f": {who.reason}" if who.reason else "")
            self.event(f"approval:{step.id}:denied", EventType.DENIED, payload)
        else:
            text = f"nobody approved it by {request.expires_at.isoformat()}"
            self.event(
                f"approval:{step.id}:expired",
                EventType.EXPIRED,
                {**payload, "expiresAt": request.expires_at.isoformat()},
                level=EventLevel.WARNING,
            )
            self.record_audit(
                SYSTEM_ACTOR,
                "approval.expired",
                {"stepId": step.id, "digest": request.digest, "action": request.action},
            )
        step.finished_at = self.now
        step.error = clip(f"{'ApprovalDenied' if denied else 'ApprovalExpired'}: {text}")
        if outcome is OnOutcome.SKIP:
            step.phase = StepPhase.SKIPPED
            self.fire(Trigger.DENIED_SKIPPED if denied else Trigger.EXPIRED_SKIPPED)
            self.status.reason = None
            self.status.message = None
            self.event(
                f"step:{step.id}:skipped",
                EventType.STEP_SKIPPED,
                {"stepId": step.id, "reason": step.error},
                level=EventLevel.WARNING,
            )
            self.kube("StepSkipped", f"step {step.id} ({step.tool}) skipped: {text}", True)
            if self.looping:
                self.record_inputs.append(
                    RecordInput(
                        step_id=step.id,
                        attempt=max(step.attempts, 1),
                        tool=step.tool,
                        tool_version=self.registry[step.tool].version,
                        value=None,
                        error=f"not run: {text}",
                    )
                )
            return True
        step.phase = StepPhase.FAILED
        self.fail(
            REASON_APPROVAL_DENIED if denied else REASON_APPROVAL_EXPIRED,
            f"step {step.id!r} ({step.tool}) {text}",
            Trigger.DENIED if denied else Trigger.EXPIRED,
        )
        return False

    def reject_unanswered(self) -> None:
        """Approvals nothing counted: the step is not waiting, or not this run's."""
        steps = {s.id: s for s in self.status.steps}
        for approval in self.obs.approvals:
            if approval.name in self.answered:
                continue
            answer = _parse_answer(approval)
            if answer is None:
                self._answer(
                    approval, ApprovalOutcome.REJECTED, "Invalid", "spec is not a valid Approval"
                )
                continue
            step = steps.get(answer.step_id)
            if step is None and self.status.steps:
                self._answer(
                    approval,
                    ApprovalOutcome.REJECTED,
                    RejectReason.STEP_NOT_FOUND,
                    f"run {self.name!r} has no step {answer.step_id!r}",
                )
                continue
            if step is not None and any(
                d.approval == approval.name
                for d in (step.approval.decisions if step.approval else [])
            ):
                self._answer(approval, ApprovalOutcome.ACCEPTED, "Accepted", "counted")
                continue
            where = f"the run is {self.status.phase}"
            if step is not None:
                where += f", step {step.id!r} is {step.phase}"
                if step.approval is not None:
                    where += f" (approval {step.approval.state})"
            self._answer(
                approval,
                ApprovalOutcome.REJECTED,
                RejectReason.NOT_WAITING,
                f"step {answer.step_id!r} is not awaiting approval: {where}",
            )

    # -- the loop ---------------------------------------------------------------------------

    def extend_loop(self) -> None:
        """An agent loop's new steps (a turn's calls and the next turn) join the status."""
        known = {s.id for s in self.status.steps}
        self.check_allowed(self.plan())  # the model is offered only these; never trust it
        for planned in self.plan().steps:
            if planned.id in known:
                continue
            index = len(self.status.steps)
            self.status.steps.append(
                StepStatus(
                    id=planned.id,
                    index=index,
                    tool=planned.tool,
                    params=compact_params(planned.params),
                )
            )
            if agent_loop.turn_number(planned.id) is None:
                self.event(
                    f"step:{planned.id}:proposed",
                    EventType.STEP_PROPOSED,
                    {
                        "stepId": planned.id,
                        "index": index,
                        "tool": planned.tool,
                        "params": compact_params(planned.params),
                    },
                )

    def execute(self) -> None:
        """Advance the steps, one at a time, in order."""
        while self.status.phase in (RunPhase.EXECUTING, RunPhase.AWAITING_APPROVAL):
            if self.looping:
                try:
                    self.extend_loop()
                except agent_loop.LoopLimitExceeded as exc:
                    self.fail(REASON_LOOP_LIMIT, str(exc))
                    return
                except PlanningError as exc:
                    self.fail(REASON_PLANNING_FAILED, str(exc))
                    return
            step = next(
                (
                    s
                    for s in self.status.steps
                    if s.phase not in (StepPhase.SUCCEEDED, StepPhase.SKIPPED)
                ),
                None,
            )
            if step is None:
                self.complete()
                return
            try:
                if not self.advance(step):
                    return
            except PlanningError as exc:
                self.fail(REASON_PLANNING_FAILED, str(exc))
                return

    def advance(self, step: StepStatus) -> bool:
        """Move `step` on; True when the loop should look at the steps again."""
        spec = self.registry.get(step.tool)
        if spec is None:
            raise PlanningError(f"step {step.id!r} uses unknown tool {step.tool!r}")
        if step.phase is StepPhase.FAILED:
            if step.dead_lettered:
                self.fail(
                    REASON_DEAD_LETTERED,
                    f"step {step.id!r} ({step.tool}) dead-lettered after {step.attempts}"
                    f" attempt(s): {step.error or 'unknown error'}",
                )
            else:
                self.fail(
                    REASON_STEP_FAILED,
                    f"step {step.id!r} ({step.tool}) failed: {step.error or 'unknown error'}",
                )
            return False
        if step.phase is StepPhase.CANCELLED:
            self.fail(REASON_STEP_FAILED, f"step {step.id!r} was cancelled")
            return False
        if not spec.runs_job:
            return self.await_input(step)
        if step.phase is StepPhase.PENDING:
            if step.approval is None or step.approval.state is not ApprovalState.APPROVED:
                terms = self.approval_terms(step)
                if terms is not None:
                    self.request_approval(step, terms)
                    return self.settle_approval(step)
            if step.next_attempt_at is not None and self.now < step.next_attempt_at:
                return False  # rate limited: wake_at brings the run back then
            self.start_step(step)
            return False
        if step.phase is StepPhase.AWAITING_APPROVAL:
            return self.settle_approval(step)
        if step.phase is StepPhase.BACKOFF:
            if step.next_attempt_at is not None and self.now < step.next_attempt_at:
                return False
            self.start_step(step)
            return False
        # running
        return self.observe_running(step)

    def wake_at(self) -> datetime | None:
        if is_terminal(self.status.phase):
            return None
        times: list[datetime] = []
        if self.status.deadline_at is not None:
            times.append(self.status.deadline_at)
        for step in self.status.steps:
            if (
                step.phase in (StepPhase.BACKOFF, StepPhase.PENDING)
                and step.next_attempt_at is not None
            ):
                times.append(step.next_attempt_at)
            elif step.phase is StepPhase.AWAITING_APPROVAL and step.approval is not None:
                times.append(step.approval.expires_at)
            elif step.phase is StepPhase.RUNNING and step.deadline_at is not None:
                times.append(step.deadline_at)
        return min(times) if times else None

    def run(self) -> None:
        self.status.run_id = self.uid
        if isinstance(self.generation, int):
            self.status.observed_generation = self.generation
        if is_terminal(self.status.phase):
            self.reject_unanswered()
            return
        try:
            self.spec = AgentRunSpec.model_validate(dict(self.obs.run.get("spec") or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
                for err in exc.errors()
            )
            self.fail(REASON_INVALID_SPEC, f"spec is invalid: {problems}")
            return
        if self.status.phase is RunPhase.PENDING:
            if not self.admit(self.spec):
                return
            self.tenant = self.spec.tenant
            if self.spec.cancel is not None:
                self.cancel()
                self.reject_unanswered()
                return
            position = self.queue_position()
            if position is not None:
                self.queue(position)
                self.reject_unanswered()
                return
            self.start_planning()
        self.tenant = self.spec.tenant
        if self.spec.cancel is not None:
            self.cancel()
        elif self.status.deadline_at is not None and self.now >= self.status.deadline_at:
            self.deadline_exceeded()
        if self.status.phase is RunPhase.PLANNING:
            self.finish_planning()
        if self.status.phase in (RunPhase.EXECUTING, RunPhase.AWAITING_APPROVAL):
            self.execute()
        self.reject_unanswered()

    def decision(self) -> Decision:
        changed = self.status.wire() != self.old.wire()
        first_sight = self.tenant is not None and self.old.phase is RunPhase.PENDING
        # The tenant's queue moved: a slot freed, or a run left the queue (admitted or
        # finished), so the runs behind it have a new position.
        left_slot = (holds_slot(self.old.phase) and is_terminal(self.status.phase)) or (
            self.old.phase is RunPhase.PENDING and self.status.phase is not RunPhase.PENDING
        )
        return Decision(
            status=self.status,
            status_changed=changed,
            spec=self.spec,
            db_tenant=self.tenant,
            record_run=first_sight and changed,
            phase_changed=self.status.phase != self.old.phase,
            events=tuple(self.events),
            start_steps=tuple(self.start_steps),
            delete_jobs=tuple(dict.fromkeys(self.delete_jobs)),
            delete_secrets=tuple(dict.fromkeys(self.delete_secrets)),
            kube_events=tuple(self.kube_events),
            record_inputs=tuple(self.record_inputs),
            approval_updates=tuple(self.approval_updates),
            audit=tuple(self.audit),
            dead_letters=tuple(self.dead_letters),
            wake_at=self.wake_at(),
            released_slot=left_slot,
            needs_plan=self.needs_plan and self.status.phase is RunPhase.PLANNING,
        )


def _parse_answer(approval: ObservedApproval) -> ApprovalSpec | None:
    try:
        return ApprovalSpec.model_validate(dict(approval.spec))
    except ValidationError:
        return None


def decide_run(obs: Observation, registry: ToolRegistry, tools: ToolSettings) -> Decision:
    """What to do for one AgentRun, given everything observed about it. Pure."""
    run = _Run(obs, registry, tools)
    run.run()
    return run.decision()
