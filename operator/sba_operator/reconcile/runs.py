"""The pure run reconcile: (AgentRun, Jobs, tool-call rows) -> what to do next.

`decide_run` is level-triggered and a fixpoint: it advances the run as far as
the observation allows (pending → planning → executing → completed | failed)
and, given the state it produced, decides nothing more. Every phase change goes
through `sba_core.lifecycle.transition`. Steps run one at a time, in order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from sba_core import group
from sba_core.events import EventLevel, EventType, NewRunEvent
from sba_core.lifecycle import is_terminal, transition
from sba_core.models.run import (
    MAX_SUMMARY_CHARS,
    AgentRunSpec,
    AgentRunStatus,
    Condition,
    RunPhase,
    RunResult,
    StepPhase,
    StepStatus,
)
from sba_core.planning import BuiltinPlanner, Plan, PlannedStep, PlanningError
from sba_core.step_token import StepClaims
from sba_core.summaries import artifact_id_of, clip, summarize_result
from sba_core.tools.registry import ToolRegistry
from sba_operator.reconcile.jobs import (
    RunRef,
    build_job,
    job_name,
    labels_match,
    token_secret_name,
)
from sba_operator.reconcile.model import (
    Decision,
    JobState,
    KubeEvent,
    Observation,
    ObservedJob,
    ObservedToolCall,
    StartStep,
    termination_detail,
)
from sba_operator.settings import ToolSettings

# Reasons a run (status.reason) or a step failed.
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_TENANT_MISMATCH: Final = "TenantMismatch"
REASON_TENANT_SUSPENDED: Final = "TenantSuspended"
REASON_PLANNING_FAILED: Final = "PlanningFailed"
REASON_STEP_FAILED: Final = "StepFailed"
REASON_COMPLETED: Final = "Completed"
REASON_NO_RESULT: Final = "NoResult"
REASON_JOB_CONFLICT: Final = "JobNameConflict"

COND_PLANNED: Final = "Planned"
COND_SUCCEEDED: Final = "Succeeded"

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
        self.spec: AgentRunSpec | None = None
        self.tenant: str | None = None
        self._plan: Plan | None = None

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

    def move(self, target: RunPhase) -> None:
        self.status.phase = transition(self.status.phase, target)

    # -- terminal outcomes ------------------------------------------------------------------

    def fail(self, reason: str, message: str) -> None:
        message = clip(message)
        self.move(RunPhase.FAILED)
        self.status.reason = reason
        self.status.message = message
        self.status.finished_at = self.now
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
        self.move(RunPhase.COMPLETED)
        last = self.status.steps[-1] if self.status.steps else None
        result = self.status.result or RunResult()
        result.summary = (last.summary if last and last.summary else None) or (
            f"completed {len(self.status.steps)} step(s)"
        )
        self.status.result = result
        self.status.reason = REASON_COMPLETED
        self.status.message = clip(f"all {len(self.status.steps)} step(s) succeeded")
        self.status.finished_at = self.now
        self.status.current_step = None
        self._finish_usage()
        self.condition(COND_SUCCEEDED, "True", REASON_COMPLETED, self.status.message)
        self.event("phase:completed", EventType.COMPLETED, result.wire())
        self.kube("Completed", f"run completed: {result.summary}")

    def _finish_usage(self) -> None:
        self.status.usage.tool_calls = sum(step.attempts for step in self.status.steps)
        if self.status.started_at is not None and self.status.finished_at is not None:
            seconds = (self.status.finished_at - self.status.started_at).total_seconds()
            self.status.usage.run_seconds = max(seconds, 0.0)

    # -- planning ---------------------------------------------------------------------------

    def plan(self) -> Plan:
        if self._plan is None:
            assert self.spec is not None
            self._plan = BuiltinPlanner(self.registry).plan_sync(self.spec)
        return self._plan

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

    # -- the run ----------------------------------------------------------------------------

    def ref(self) -> RunRef:
        assert self.tenant is not None
        return RunRef(uid=self.uid, name=self.name, namespace=self.namespace, tenant=self.tenant)

    def current_step_text(self, step: StepStatus) -> str:
        return f"{step.index + 1}/{len(self.status.steps)} {step.tool}"

    def admit(self, spec: AgentRunSpec) -> bool:
        """Tenant checks before a run is planned; False when the run was failed."""
        expected = group.tenant_namespace(spec.tenant)
        if self.namespace != expected:
            self.fail(
                REASON_TENANT_MISMATCH,
                f"a run of tenant {spec.tenant!r} must live in namespace {expected!r},"
                f" not {self.namespace!r}",
            )
            return False
        if self.obs.tenant is None or self.obs.tenant.name != spec.tenant:
            self.fail(REASON_TENANT_MISMATCH, f"tenant {spec.tenant!r} does not exist")
            return False
        if self.obs.tenant.suspended:
            self.fail(REASON_TENANT_SUSPENDED, f"tenant {spec.tenant!r} is suspended")
            return False
        return True

    def start_planning(self) -> None:
        self.move(RunPhase.PLANNING)
        self.status.started_at = self.status.started_at or self.now
        self.status.reason = None
        self.status.message = None
        self.condition(COND_SUCCEEDED, "Unknown", "Planning", "planning the run")
        self.event(
            "phase:pending", EventType.PENDING, {"name": self.name, "namespace": self.namespace}
        )
        self.event("phase:planning", EventType.PLANNING)
        self.kube("Planning", "planning the run")

    def finish_planning(self) -> bool:
        try:
            plan = self.plan()
            self.check_allowed(plan)
        except PlanningError as exc:
            self.condition(COND_PLANNED, "False", REASON_PLANNING_FAILED, str(exc))
            self.fail(REASON_PLANNING_FAILED, str(exc))
            return False
        self.status.steps = [
            StepStatus(id=s.id, index=i, tool=s.tool, params=compact_params(s.params))
            for i, s in enumerate(plan.steps)
        ]
        message = f"{len(plan.steps)} step(s) by the {plan.planner} planner: " + ", ".join(
            f"{s.id} ({s.tool})" for s in plan.steps
        )
        self.condition(COND_PLANNED, "True", "Planned", message)
        self.event(
            "plan:ready",
            EventType.PLAN_READY,
            {
                "planner": plan.planner,
                "tokensUsed": plan.tokens_used,
                "steps": [{"id": s.id, "tool": s.tool, "params": s.params} for s in plan.steps],
            },
        )
        self.kube("Planned", message)
        self.move(RunPhase.EXECUTING)
        self.condition(COND_SUCCEEDED, "Unknown", "Executing", "running the plan's steps")
        self.event("phase:executing", EventType.EXECUTING)
        return True

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
                run=ref, step_id=step.id, attempt=step.attempts, spec=spec, tools=self.tools
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
        step.attempts += 1
        name = job_name(self.name, step.id, step.attempts)
        step.phase = StepPhase.RUNNING
        step.job_name = name
        step.started_at = self.now
        step.finished_at = None
        step.error = None
        self.status.current_step = self.current_step_text(step)
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
        self.kube(
            "StepStarted", f"step {step.id} ({step.tool}) attempt {step.attempts}: Job {name}"
        )

    def step_succeeded(
        self, step: StepStatus, call: ObservedToolCall, job: ObservedJob | None
    ) -> None:
        step.phase = StepPhase.SUCCEEDED
        step.finished_at = self._finished_at(call, job)
        step.summary = summarize_result(step.tool, call.result)
        step.result_ref = call.id
        step.error = None
        artifact = artifact_id_of(step.tool, call.result)
        if artifact:
            result = self.status.result or RunResult()
            result.artifact_id = artifact
            result.artifact_url = artifact_url(self.uid, artifact)
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
        self.kube("StepSucceeded", f"step {step.id} ({step.tool}): {step.summary}")
        if step.job_name:
            self.delete_secrets.append(token_secret_name(step.job_name))

    def step_failed(
        self,
        step: StepStatus,
        reason: str,
        error: str,
        job: ObservedJob | None = None,
        call: ObservedToolCall | None = None,
    ) -> None:
        step.phase = StepPhase.FAILED
        step.finished_at = self._finished_at(call, job)
        step.error = clip(f"{reason}: {error}")
        if call is not None and call.success is not None:
            step.result_ref = call.id  # the tool reported: its error is stored in full
        self._step_seconds()
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
            },
            level=EventLevel.ERROR,
        )
        self.kube("StepFailed", f"step {step.id} ({step.tool}): {step.error}", warning=True)
        if step.job_name:
            self.delete_secrets.append(token_secret_name(step.job_name))

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
            if job is None:
                if step.job_name in self.obs.foreign_jobs:
                    self.step_failed(
                        step,
                        REASON_JOB_CONFLICT,
                        f"Job {step.job_name} exists and does not belong to this run",
                    )
                    return True
                # Level-triggered: the Job should exist; (re)create it, adopting on conflict.
                self.start_steps.append(self.start_action(step))
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
        error = (
            (call.error if call is not None and call.success is False else None)
            or termination_detail(job.termination_message)
            or job.message
            or "the Job failed"
        )
        self.step_failed(step, job.reason or "Failed", error, job, call)
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

    def execute(self) -> None:
        """Advance the steps, one at a time, in order."""
        while self.status.phase is RunPhase.EXECUTING:
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
            if step.phase is StepPhase.FAILED:
                self.fail(
                    REASON_STEP_FAILED,
                    f"step {step.id!r} ({step.tool}) failed: {step.error or 'unknown error'}",
                )
                return
            if step.phase is StepPhase.PENDING:
                try:
                    self.start_step(step)
                except PlanningError as exc:
                    self.fail(REASON_PLANNING_FAILED, str(exc))
                return
            # running
            try:
                settled = self.observe_running(step)
            except PlanningError as exc:
                self.fail(REASON_PLANNING_FAILED, str(exc))
                return
            if not settled:
                return

    def run(self) -> None:
        self.status.run_id = self.uid
        if isinstance(self.generation, int):
            self.status.observed_generation = self.generation
        if is_terminal(self.status.phase):
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
            self.start_planning()
        self.tenant = self.spec.tenant
        if self.status.phase is RunPhase.PLANNING and not self.finish_planning():
            return
        if self.status.phase is RunPhase.EXECUTING:
            self.execute()

    def decision(self) -> Decision:
        changed = self.status.wire() != self.old.wire()
        first_sight = self.tenant is not None and self.old.phase is RunPhase.PENDING
        return Decision(
            status=self.status,
            status_changed=changed,
            spec=self.spec,
            db_tenant=self.tenant,
            record_run=first_sight and changed,
            phase_changed=self.status.phase != self.old.phase,
            events=tuple(self.events),
            start_steps=tuple(self.start_steps),
            delete_secrets=tuple(self.delete_secrets),
            kube_events=tuple(self.kube_events),
        )


def decide_run(obs: Observation, registry: ToolRegistry, tools: ToolSettings) -> Decision:
    """What to do for one AgentRun, given everything observed about it. Pure."""
    run = _Run(obs, registry, tools)
    run.run()
    return run.decision()
