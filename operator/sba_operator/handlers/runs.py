"""The run driver: observe, decide (pure), execute. One reconcile per run at a time.

`RunDriver.reconcile(namespace, name, uid)` is what every AgentRun and Job
event calls. It reads the AgentRun, its Jobs, Approvals and Tenant from memory
(`self.reads`: Kopf's watch-fed indexes plus our own latest writes) and the
stored tool calls from Postgres, asks `sba_operator.reconcile.decide_run` what to
do, and does it in a crash-safe order:

1. upsert the run row (first sight) and record each starting attempt in `tool_calls`;
2. create the step-token Secret and the Job (a 409 adopts ours, never duplicates);
3. append the run events (deduplicated by key) and announce them on Redis;
4. update the run row's phase;
5. replace status through the status subresource, guarded by resourceVersion;
6. delete finished attempts' token Secrets and post Kubernetes Events.

A crash anywhere repeats the same decision next time; every step above is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from redis.asyncio import Redis

from sba_core import group
from sba_core.agent_loop import turn_number
from sba_core.events import EventType
from sba_core.group import API_VERSION, APPROVAL_KIND
from sba_core.lifecycle import is_terminal
from sba_core.llm_planning import allowed_registry
from sba_core.models.approval import (
    ApprovalOutcome,
    ApprovalPolicy,
    ApprovalStatus,
    RejectReason,
)
from sba_core.models.run import AgentRunSpec, Condition, RunMode, RunPhase, StepPhase
from sba_core.models.tenant import TenantQuotas
from sba_core.planning import Plan, PlannedStep, Planner, PlanningError
from sba_core.step_token import mint_step_token
from sba_core.tools.catalog import ToolCatalog
from sba_core.tools.registry import ToolRegistry
from sba_operator.adapters.llm_planner import LLMPlanningFailed
from sba_operator.kube import Conflict, Kube
from sba_operator.kube.view import ClusterReads, DirectReads
from sba_operator.metrics import OperatorMetrics
from sba_operator.reconcile import (
    Decision,
    KubeEvent,
    Observation,
    ObservedJob,
    ObservedToolCall,
    RunRef,
    StartStep,
    build_step_secret,
    decide_run,
    observe_job,
    parse_status,
)
from sba_operator.reconcile.admission import tenant_view
from sba_operator.reconcile.jobs import labels_match, with_traceparent
from sba_operator.reconcile.model import (
    ObservedApproval,
    PeerRun,
    PlanRefusal,
    RateLimited,
    TenantView,
    parse_time,
)
from sba_operator.reconcile.runs import (
    COND_PROCESSED,
    REASON_PLANNING_FAILED,
    REASON_QUEUED,
    REASON_TOKEN_QUOTA,
)
from sba_operator.settings import Settings
from sba_store.audit import AuditRepository
from sba_store.dead_letters import DeadLetterRepository
from sba_store.eventbus import announce
from sba_store.events import EventRepository
from sba_store.plans import RunPlanRecord, RunPlanRepository, TokenUsageRepository
from sba_store.ratelimit import Limit, RateLimiter, per_window, retry_at
from sba_store.records import NewEvent
from sba_store.runs import RunRepository
from sba_store.tool_calls import ToolCallRepository
from sba_telemetry import (
    TRACEPARENT_ANNOTATION,
    Telemetry,
    TelemetrySettings,
    bind_log_context,
    context_from_traceparent,
    current_traceparent,
)

if TYPE_CHECKING:
    from sba_operator.handlers.scheduler import WakeScheduler

log = logging.getLogger(__name__)

PostEvent = Callable[[Mapping[str, Any], KubeEvent], None]
Clock = Callable[[], datetime]
PlannerFactory = Callable[[ToolRegistry], Planner]
"""The tools a run may use -> the (LLM) planner that plans it over those tools."""

_QUOTA_DEFAULTS: Final = TenantQuotas()
_FINISHED_STEP_EVENTS: Final = {
    str(EventType.STEP_SUCCEEDED): "succeeded",
    str(EventType.STEP_FAILED): "failed",
}
_TERMINAL_EVENTS: Final = frozenset(
    {str(EventType.COMPLETED), str(EventType.FAILED), str(EventType.CANCELLED)}
)

STATUS_CONFLICT_RETRIES: Final = 4
ANNOUNCE_BACKOFF: Final = (0.2, 0.5, 1.0)
PLAN_RETRY_SECONDS: Final = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def _job_failed(job: Mapping[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return True
    return False


def _approval_policy(tenant: Mapping[str, Any]) -> ApprovalPolicy | None:
    raw = (tenant.get("spec") or {}).get("approvalPolicy")
    if not isinstance(raw, Mapping):
        return None
    try:
        return ApprovalPolicy.model_validate(dict(raw))
    except ValueError:
        return None


def _peer(raw: Mapping[str, Any]) -> PeerRun | None:
    meta = raw.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    created = parse_time(meta.get("creationTimestamp"))
    if created is None:
        return None
    status = parse_status(raw.get("status"))
    return PeerRun(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        created_at=created,
        phase=status.phase,
        cancelled=bool((raw.get("spec") or {}).get("cancel")),
    )


class RunLocks:
    """One asyncio.Lock per run uid, so reconciles of one run never overlap."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, uid: str) -> asyncio.Lock:
        lock = self._locks.get(uid)
        if lock is None:
            lock = self._locks[uid] = asyncio.Lock()
        return lock

    def forget(self, uid: str) -> None:
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]

    def __len__(self) -> int:
        return len(self._locks)


class RunDriver:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        runs: RunRepository,
        events: EventRepository,
        tool_calls: ToolCallRepository,
        redis: Redis,
        catalog: ToolCatalog,
        post_event: PostEvent,
        audit: AuditRepository | None = None,
        dead_letters: DeadLetterRepository | None = None,
        plans: RunPlanRepository | None = None,
        token_usage: TokenUsageRepository | None = None,
        planner_factory: PlannerFactory | None = None,
        limiter: RateLimiter | None = None,
        metrics: OperatorMetrics | None = None,
        telemetry: Telemetry | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry or Telemetry(TelemetrySettings("sba-operator", exporter="none"))
        self.plans = plans
        """Plans of record; None: every plan is the builtin planner's (recomputed)."""
        self.token_usage = token_usage
        self.planner_factory = planner_factory
        """None: prompt-only runs are planned by the builtin planner inside the decision."""
        self.limiter = limiter
        """The tenants' tool-call windows in Redis; None: no tool-call quota."""
        self.metrics = metrics
        self.audit = audit
        self.dead_letters = dead_letters
        self.scheduler: WakeScheduler | None = None
        """Set by the registration: wakes runs at their Decision.wake_at."""
        self.kube = kube
        """Writes (and the reads of `DirectReads`)."""
        self.reads: ClusterReads = DirectReads(kube)
        """What reconciles read; the registration swaps in the watch-fed indexes."""
        self.runs = runs
        self.events = events
        self.tool_calls = tool_calls
        self.redis = redis
        self.catalog = catalog
        """Builtins and user tools; each run sees those of its own namespace."""
        self.post_event = post_event
        self.clock = clock
        self.locks = RunLocks()
        self._planning: dict[str, asyncio.Task[None]] = {}
        """Runs whose LLM planning is under way (background tasks, by run uid)."""
        self._refusals: dict[str, PlanRefusal] = {}
        """Plannings that ended in a refusal, for the run's next reconcile to fail it."""

    async def reconcile(self, namespace: str, name: str, uid: str) -> Decision | None:
        """Reconcile one run; None when it no longer exists (or is another object now)."""
        async with self.locks.get(uid):
            decision = await self._reconcile_retrying(namespace, name, uid)
            if decision is not None and decision.needs_plan:
                # The run is in `planning` now (status written): plan it and go on at once.
                decision = await self._reconcile_retrying(namespace, name, uid)
            return decision

    async def _reconcile_retrying(self, namespace: str, name: str, uid: str) -> Decision | None:
        for attempt in range(STATUS_CONFLICT_RETRIES):
            try:
                # After a 409 the memory is behind another writer: read that run directly.
                return await self._reconcile_once(namespace, name, uid, fresh=attempt > 0)
            except Conflict:
                # Our status write raced another writer: re-read and decide again.
                if attempt == STATUS_CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        return None  # unreachable; keeps mypy content

    # -- observe ---------------------------------------------------------------------------

    async def _observe(self, obj: Mapping[str, Any], uid: str) -> Observation:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        name = str(meta.get("name", ""))
        status = parse_status(obj.get("status"))
        now = self.clock()
        approvals = await self._unanswered_approvals(namespace, name)
        if is_terminal(status.phase):
            return Observation(run=obj, now=now, approvals=approvals)
        tenant = None
        spec_tenant = (obj.get("spec") or {}).get("tenant")
        if isinstance(spec_tenant, str) and spec_tenant:
            raw_tenant = await self.reads.tenant(spec_tenant)
            tenant = tenant_view(raw_tenant)
            if tenant is not None and raw_tenant is not None:
                tenant = replace(tenant, approval_policy=_approval_policy(raw_tenant))
        peers = None
        if status.phase is RunPhase.PENDING and tenant is not None:
            peers = tuple(
                peer
                for raw in await self.reads.agentruns(namespace)
                if (peer := _peer(raw)) is not None
            )
        running = [s for s in status.steps if s.phase is StepPhase.RUNNING]
        finished_jobs = {s.job_name for s in running if s.job_name}
        jobs: dict[str, ObservedJob] = {}
        for raw in await self.reads.run_jobs(namespace, uid):
            job_name = str((raw.get("metadata") or {}).get("name", ""))
            pods: list[dict[str, Any]] = []
            if job_name in finished_jobs and _job_failed(raw):
                # Only a failed step's error comes from its pod (the termination message).
                pods = await self.reads.job_pods(namespace, job_name)
            jobs[job_name] = observe_job(raw, pods)
        plan, await_plan, refusal = await self._observe_plan(obj, uid, status.phase, tenant)
        turns = await self._turn_results(obj, uid, status.phase)
        calls: dict[tuple[str, int], ObservedToolCall] = {}
        # Steps start only once the spec names a tenant; their calls are stored under it.
        call_tenant = spec_tenant if isinstance(spec_tenant, str) else ""
        for step in running if call_tenant else ():
            record = await self.tool_calls.get(
                UUID(uid), step.id, step.attempts, tenant_id=call_tenant
            )
            if record is not None:
                calls[(step.id, step.attempts)] = ObservedToolCall(
                    id=str(record.id),
                    success=record.success,
                    result=record.result,
                    error=record.error,
                    finished_at=record.finished_at,
                )
        return Observation(
            run=obj,
            now=now,
            jobs=jobs,
            tool_calls=calls,
            tenant=tenant,
            approvals=approvals,
            peers=peers,
            plan=plan,
            await_plan=await_plan,
            plan_refusal=refusal,
            turn_results=turns,
        )

    async def _turn_results(
        self, obj: Mapping[str, Any], uid: str, phase: RunPhase
    ) -> dict[str, Any]:
        """An agent loop's finished turns (their results propose the next steps)."""
        spec = obj.get("spec") or {}
        tenant = spec.get("tenant")
        if spec.get("mode") != str(RunMode.LOOP) or not isinstance(tenant, str) or not tenant:
            return {}
        if phase not in (RunPhase.EXECUTING, RunPhase.AWAITING_APPROVAL):
            return {}
        done = await self.tool_calls.latest_successful(UUID(uid), tenant_id=tenant)
        return {
            step_id: record.result
            for step_id, record in done.items()
            if turn_number(step_id) is not None
        }

    # -- planning (the driver's planner: I/O, so not in the pure decision) -------------------

    async def _observe_plan(
        self, obj: Mapping[str, Any], uid: str, phase: RunPhase, tenant: TenantView | None
    ) -> tuple[Plan | None, bool, PlanRefusal | None]:
        """(the plan of record, the driver will plan it, why planning was refused).

        A prompt-only run past `pending` has its plan in Postgres when a planner other
        than the builtin one made it; in `planning`, with the LLM planner configured and
        no plan stored yet, the driver makes it — beside the reconcile, never in it: a
        background task asks the model, stores the plan (before any status says
        `executing`, so a crash in between reuses it) and wakes the run; until then the
        run waits in `planning`, and a cancel is decided at once.
        """
        if self.plans is None or tenant is None or phase not in _PLANNED_PHASES:
            return None, False, None
        try:
            spec = AgentRunSpec.model_validate(dict(obj.get("spec") or {}))
        except ValueError:
            return None, False, None  # the decision fails the run with the reason
        if spec.plan or spec.tenant != tenant.name or spec.mode is RunMode.LOOP:
            return None, False, None  # a loop's steps come from its turns, not a planner
        run_id = UUID(uid)
        if phase is not RunPhase.PENDING:
            record = await self.plans.get(run_id, tenant_id=spec.tenant)
            if record is not None:
                return _plan_of(record), False, None
        if self.planner_factory is None or phase not in (RunPhase.PENDING, RunPhase.PLANNING):
            return None, False, None
        if phase is RunPhase.PENDING or spec.cancel is not None:
            if spec.cancel is not None:
                self._stop_planning(uid)
            return None, True, None
        if self.scheduler is None:  # nothing could wake the run later: plan in line
            return await self._make_plan(run_id, spec, tenant)
        refusal = self._refusals.pop(uid, None)
        if refusal is not None:
            return None, False, refusal
        meta = obj.get("metadata") or {}
        self._start_planning(
            uid, str(meta.get("namespace", "")), str(meta.get("name", "")), spec, tenant
        )
        return None, True, None

    def _start_planning(
        self, uid: str, namespace: str, name: str, spec: AgentRunSpec, tenant: TenantView
    ) -> None:
        running = self._planning.get(uid)
        if running is not None and not running.done():
            return
        self._planning[uid] = asyncio.create_task(
            self._plan_beside(uid, namespace, name, spec, tenant), name=f"plan {uid}"
        )

    def _stop_planning(self, uid: str) -> None:
        task = self._planning.pop(uid, None)
        if task is not None and not task.done():
            task.cancel()

    async def _plan_beside(
        self, uid: str, namespace: str, name: str, spec: AgentRunSpec, tenant: TenantView
    ) -> None:
        """The model call of one run's planning, outside its reconcile; then wake the run."""
        retry_in = 0.0
        try:
            with bind_log_context(run_id=uid, tenant_id=spec.tenant):
                _, _, refusal = await self._make_plan(UUID(uid), spec, tenant)
            if refusal is not None:
                self._refusals[uid] = refusal
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store or the model's client failed: try again soon
            log.warning("planning run %s failed (%s); trying again", uid, exc)
            retry_in = PLAN_RETRY_SECONDS
        finally:
            self._planning.pop(uid, None)
        if self.scheduler is not None:
            self.scheduler.schedule(
                uid, namespace, name, self.clock() + timedelta(seconds=retry_in)
            )

    async def _make_plan(
        self, run_id: UUID, spec: AgentRunSpec, tenant: TenantView
    ) -> tuple[Plan | None, bool, PlanRefusal | None]:
        assert self.plans is not None
        assert self.planner_factory is not None
        day = self.clock().astimezone(UTC).date()
        quota = (
            tenant.tokens_per_day
            if tenant.tokens_per_day is not None
            else _QUOTA_DEFAULTS.tokens_per_day
        )
        used = await self.token_usage.tokens_on(spec.tenant, day) if self.token_usage else 0
        if used >= quota:
            log.warning(
                "tenant %s is over quotas.tokensPerDay (%d of %d): not planning run %s",
                spec.tenant,
                used,
                quota,
                run_id,
            )
            return (
                None,
                False,
                PlanRefusal(
                    REASON_TOKEN_QUOTA,
                    f"tenant {spec.tenant!r} has used {used} of its {quota} LLM tokens for"
                    f" {day.isoformat()} (UTC; quotas.tokensPerDay): the LLM planner will not"
                    " plan more runs today; raise the quota, or give the run an explicit plan",
                ),
            )
        registry = self.catalog.registry_for(group.tenant_namespace(spec.tenant))
        planner = self.planner_factory(allowed_registry(registry, tenant.allowed_tools))
        try:
            with self.telemetry.span("plan", attributes={"tenant_id": spec.tenant}) as span:
                plan = await planner.plan(spec)
                span.set_attribute("sba.planner", plan.planner)
                span.set_attribute("sba.plan_steps", len(plan.steps))
        except LLMPlanningFailed as exc:
            if self.token_usage is not None and exc.usage.total:
                await self.token_usage.add(spec.tenant, day, exc.usage.total)
                self._count_tokens(spec.tenant, exc.usage.total, "failed")
            reasons = "; ".join(exc.notes)
            return None, False, PlanRefusal(REASON_PLANNING_FAILED, f"{exc} (after: {reasons})")
        except PlanningError as exc:
            return None, False, PlanRefusal(REASON_PLANNING_FAILED, str(exc))
        stored = await self.plans.store(
            RunPlanRecord(
                run_id=run_id,
                tenant_id=spec.tenant,
                planner=plan.planner,
                model=plan.model,
                steps=[{"id": s.id, "tool": s.tool, "params": s.params} for s in plan.steps],
                notes=list(plan.notes),
                prompt_tokens=plan.prompt_tokens,
                completion_tokens=plan.completion_tokens,
                tokens_used=plan.tokens_used,
            ),
            day=day,
        )
        if stored.inserted:
            self._count_tokens(spec.tenant, plan.tokens_used, plan.planner)
        return _plan_of(stored.record), False, None

    def _count_tokens(self, tenant: str, tokens: int, planner: str) -> None:
        if self.metrics is None:
            return
        self.metrics.llm_tokens.labels(tenant=tenant).inc(tokens)
        self.metrics.llm_plans.labels(tenant=tenant, planner=planner).inc()

    # -- the tenant's tool-call window ---------------------------------------------------------

    async def _take_slots(self, observation: Observation, decision: Decision) -> RateLimited | None:
        """A slot of the tenant's toolCallsPerMinute window for each new attempt, or the refusal.

        The slot is named by (run, step, attempt), so a repeated decision (a status
        conflict, a crash before the status write) does not count the attempt twice.
        """
        if self.limiter is None or decision.db_tenant is None:
            return None
        tenant = decision.db_tenant
        view = observation.tenant
        per_minute = (
            view.tool_calls_per_minute
            if view is not None and view.tool_calls_per_minute is not None
            else _QUOTA_DEFAULTS.tool_calls_per_minute
        )
        window = self.limiter.window_seconds
        uid = str((observation.run.get("metadata") or {}).get("uid", ""))
        for start in decision.start_steps:
            if not start.fresh:
                continue
            verdict = await self.limiter.hit(
                [
                    Limit(
                        "tool_calls",
                        RateLimiter.tool_calls_key(tenant),
                        per_window(per_minute, window),
                    )
                ],
                member=f"{uid}:{start.step_id}:{start.attempt}",
            )
            if verdict.admitted:
                continue
            when = retry_at(self.clock(), verdict)
            log.warning(
                "rate limit exceeded: tenant %s, tool_calls (%d per minute); run %s step %s"
                " waits until %s",
                tenant,
                per_minute,
                uid,
                start.step_id,
                when.isoformat(),
                extra={"tenant_id": tenant, "run_id": uid},
            )
            if self.metrics is not None:
                self.metrics.rate_limit_violations.labels(tenant=tenant, scope="tool_calls").inc()
            return RateLimited(start.step_id, start.attempt, when, per_minute)
        return None

    async def _unanswered_approvals(
        self, namespace: str, run_name: str
    ) -> tuple[ObservedApproval, ...]:
        found: list[ObservedApproval] = []
        for raw in await self.reads.unanswered_approvals(namespace, run_name):
            spec = raw.get("spec") or {}
            meta = raw.get("metadata") or {}
            created = parse_time(meta.get("creationTimestamp")) or self.clock()
            found.append(ObservedApproval(str(meta.get("name", "")), spec, created))
        found.sort(key=lambda a: (a.created_at, a.name))
        return tuple(found)

    # -- decide + execute ------------------------------------------------------------------

    async def _reconcile_once(
        self, namespace: str, name: str, uid: str, *, fresh: bool = False
    ) -> Decision | None:
        obj = await self.reads.agentrun(namespace, name, fresh=fresh)
        if obj is None or (obj.get("metadata") or {}).get("uid") != uid:
            return None
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None  # being deleted: garbage collection removes the Jobs and Secrets
        spec_tenant = (obj.get("spec") or {}).get("tenant")
        tenant = spec_tenant if isinstance(spec_tenant, str) and spec_tenant else None
        # The trace of the request that created the run (API), when it came through the API.
        annotations = meta.get("annotations") or {}
        parent = context_from_traceparent(annotations.get(TRACEPARENT_ANNOTATION))
        attributes = {"run_id": uid, "k8s.namespace.name": namespace, "sba.run_name": name}
        if tenant:
            attributes["tenant_id"] = tenant
        with (
            bind_log_context(run_id=uid, tenant_id=tenant),
            self.telemetry.span("reconcile AgentRun", parent=parent, attributes=attributes) as span,
        ):
            decision = await self._execute(obj, namespace, name, uid)
            span.set_attribute("sba.phase", str(decision.phase))
            return decision

    async def _execute(
        self, obj: Mapping[str, Any], namespace: str, name: str, uid: str
    ) -> Decision:
        """Observe, decide and carry the decision out (inside the reconcile's span)."""
        observation = await self._observe(obj, uid)
        tools = self.settings.tools
        registry = self.catalog.registry_for(namespace)
        decision = decide_run(observation, registry, tools)
        limited = await self._take_slots(observation, decision)
        if limited is not None:
            # No slot for the step: decide again, knowing that, so it waits until retryAt.
            observation = replace(observation, rate_limit=limited)
            decision = decide_run(observation, registry, tools)
        if self.scheduler is not None:
            self.scheduler.schedule(uid, namespace, name, decision.wake_at)
        self._track_phase(obj, uid, decision)
        if decision.idle:
            return decision
        run_id = UUID(uid)
        if decision.db_tenant is not None and decision.record_run:
            assert decision.spec is not None
            await self.runs.upsert(
                run_id=run_id,
                tenant_id=decision.db_tenant,
                namespace=namespace,
                name=name,
                prompt=decision.spec.prompt,
                spec=decision.spec.wire(),
                user_id=decision.spec.user,
                phase=str(decision.phase),
                finished_at=decision.status.finished_at,
            )
        foreign = await self._start_steps(obj, decision)
        if foreign:
            # A Job name we need is held by an object that is not ours: decide again,
            # knowing that, so the step fails with a reason instead of looping.
            observation = replace(observation, foreign_jobs=frozenset(foreign))
            decision = decide_run(observation, registry, tools)
            await self._start_steps(obj, decision)
        if decision.db_tenant is not None:
            await self._record_inputs(run_id, decision)
            await self._record_dead_letters(run_id, decision)
            await self._record_events(run_id, decision)
            if decision.phase_changed and not decision.record_run:
                await self.runs.set_phase(
                    run_id,
                    str(decision.phase),
                    finished_at=decision.status.finished_at,
                    tenant_id=decision.db_tenant,
                )
        # Jobs stop before status says so: a crash in between repeats the decision.
        for job in decision.delete_jobs:
            await self.kube.delete_job(namespace, job)
        if decision.status_changed:
            version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            written = await self.kube.replace_agentrun_status(
                namespace, name, version, decision.status.wire()
            )
            self.reads.wrote_agentrun(written)
        # After the status write (which records each counted decision), so a retried
        # reconcile after a 409 neither audits twice nor answers an Approval early.
        await self._write_audit(decision)
        for update in decision.approval_updates:
            await self.kube.patch_approval_status(namespace, update.name, update.status)
            self.reads.answered_approval(namespace, update.name)
            self._post_approval_event(namespace, update.name, update.status)
        for secret in decision.delete_secrets:
            await self.kube.delete_secret(namespace, secret)
        if decision.released_slot and decision.db_tenant is not None:
            await self.poke_queue(namespace, exclude=uid)
        if decision.kube_events:
            with self.telemetry.span(
                "post Kubernetes Events", attributes={"sba.events": len(decision.kube_events)}
            ):
                for event in decision.kube_events:
                    try:
                        self.post_event(obj, event)
                    except Exception:  # best-effort; status and run_events are the record
                        log.warning(
                            "could not post event %s for %s/%s", event.reason, namespace, name
                        )
        return decision

    def _track_phase(self, obj: Mapping[str, Any], uid: str, decision: Decision) -> None:
        if self.metrics is None:
            return
        tenant = decision.db_tenant or str((obj.get("spec") or {}).get("tenant", ""))
        self.metrics.runs.set(
            uid, tenant, str(decision.phase), queued=decision.status.reason == REASON_QUEUED
        )

    async def _record_inputs(self, run_id: UUID, decision: Decision) -> None:
        """A `user.input` step's value becomes its tool call's result (first write wins)."""
        assert decision.db_tenant is not None
        for item in decision.record_inputs:
            await self.tool_calls.record_start(
                run_id=run_id,
                step_id=item.step_id,
                attempt=item.attempt,
                tool=item.tool,
                tool_version=item.tool_version,
                tenant_id=decision.db_tenant,
                params={},
            )
            await self.tool_calls.record_result(
                run_id=run_id,
                step_id=item.step_id,
                attempt=item.attempt,
                tool=item.tool,
                tool_version=item.tool_version,
                tenant_id=decision.db_tenant,
                params={},
                result={"value": item.value} if item.error is None else None,
                success=item.error is None,
                error=item.error,
                duration_ms=0,
            )

    async def _record_dead_letters(self, run_id: UUID, decision: Decision) -> None:
        if self.dead_letters is None:
            return
        assert decision.db_tenant is not None
        for letter in decision.dead_letters:
            await self.dead_letters.record(
                tenant_id=decision.db_tenant,
                run_id=run_id,
                step_id=letter.step_id,
                tool=letter.tool,
                attempts=letter.attempts,
                last_error=letter.error,
                params=dict(letter.params),
            )

    async def _write_audit(self, decision: Decision) -> None:
        if self.audit is None or decision.db_tenant is None:
            return
        for entry in decision.audit:
            await self.audit.append(
                tenant_id=decision.db_tenant,
                actor=entry.actor,
                action=entry.action,
                target=entry.target,
                payload=dict(entry.payload),
            )

    async def poke_queue(self, namespace: str, exclude: str = "") -> None:
        """A slot may be free: wake the namespace's pending runs, oldest first."""
        if self.scheduler is None:
            return
        pending = sorted(
            (peer for raw in await self.reads.agentruns(namespace) if (peer := _peer(raw))),
            key=lambda p: p.queue_key,
        )
        now = self.clock()
        for peer in pending:
            if peer.phase is RunPhase.PENDING and peer.uid != exclude:
                self.scheduler.schedule(peer.uid, namespace, peer.name, now)

    async def answer_orphan_approval(self, namespace: str, name: str, run_name: str) -> None:
        """An Approval naming a run that does not exist: reject it (the API's 404)."""
        now = self.clock().replace(microsecond=0)
        message = f"no AgentRun {run_name!r} in namespace {namespace!r}"
        reason = str(RejectReason.RUN_NOT_FOUND)
        status = ApprovalStatus(
            outcome=ApprovalOutcome.REJECTED,
            reason=RejectReason.RUN_NOT_FOUND,
            message=message,
            processed_at=now,
            conditions=[
                Condition(
                    type=COND_PROCESSED,
                    status="True",
                    reason=reason,
                    message=message,
                    last_transition_time=now,
                )
            ],
        )
        await self.kube.patch_approval_status(namespace, name, status.wire())
        self.reads.answered_approval(namespace, name)
        self._post_approval_event(namespace, name, status.wire())

    def _post_approval_event(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """A Kubernetes Event on the Approval: accepted (Normal) or rejected (Warning)."""
        accepted = status.get("outcome") == str(ApprovalOutcome.ACCEPTED)
        body = {
            "apiVersion": API_VERSION,
            "kind": APPROVAL_KIND,
            "metadata": {"name": name, "namespace": namespace},
        }
        event = KubeEvent(
            "Normal" if accepted else "Warning",
            str(status.get("reason") or ("Accepted" if accepted else "Rejected")),
            str(status.get("message") or ""),
        )
        try:
            self.post_event(body, event)
        except Exception:  # best-effort, like the run's Events
            log.warning("could not post event %s for Approval %s/%s", event.reason, namespace, name)

    async def record_deleted(self, body: Mapping[str, Any]) -> None:
        """A run deleted before it finished: record it as cancelled in Postgres.

        Best effort, without a finalizer: Kubernetes garbage-collects the run's Jobs
        through their owner references whether or not the operator is up.
        """
        meta = body.get("metadata") or {}
        status = parse_status(body.get("status"))
        tenant = (body.get("spec") or {}).get("tenant")
        uid = str(meta.get("uid", ""))
        self.reads.forget_agentrun(str(meta.get("namespace", "")), str(meta.get("name", "")))
        if self.scheduler is not None:
            self.scheduler.forget(uid)
        if self.metrics is not None:
            self.metrics.runs.forget(uid)
        if is_terminal(status.phase) or not isinstance(tenant, str) or not status.run_id:
            return
        run_id = UUID(uid)
        inserted = await self.events.append(
            run_id,
            tenant,
            [
                NewEvent(
                    dedupe_key="phase:cancelled",
                    type="cancelled",
                    level="warning",
                    payload={"reason": "the AgentRun was deleted", "deleted": True},
                )
            ],
        )
        await self.runs.set_phase(
            run_id, str(RunPhase.CANCELLED), finished_at=self.clock(), tenant_id=tenant
        )
        if inserted:
            with contextlib.suppress(Exception):
                await announce(self.redis, str(run_id), inserted[-1].seq)
        await self.poke_queue(str(meta.get("namespace", "")), exclude=uid)

    async def _start_steps(self, obj: Mapping[str, Any], decision: Decision) -> set[str]:
        """Record, mint and create each starting attempt; the Job names held by strangers."""
        foreign: set[str] = set()
        if not decision.start_steps:
            return foreign
        assert decision.db_tenant is not None
        meta = obj.get("metadata") or {}
        ref = RunRef(
            uid=str(meta["uid"]),
            name=str(meta["name"]),
            namespace=str(meta["namespace"]),
            tenant=decision.db_tenant,
        )
        for start in decision.start_steps:
            if await self._start_one(ref, decision.db_tenant, start):
                continue
            foreign.add(start.job_name)
        return foreign

    async def _start_one(self, ref: RunRef, tenant: str, start: StartStep) -> bool:
        """Start one attempt; False when its Job name belongs to somebody else."""
        with self.telemetry.span(
            "create Job",
            attributes={
                "k8s.job.name": start.job_name,
                "sba.step_id": start.step_id,
                "sba.attempt": start.attempt,
                "sba.tool": start.tool,
            },
        ):
            return await self._start_one_traced(ref, tenant, start)

    async def _start_one_traced(self, ref: RunRef, tenant: str, start: StartStep) -> bool:
        await self.tool_calls.record_start(
            run_id=UUID(ref.uid),
            step_id=start.step_id,
            attempt=start.attempt,
            tool=start.tool,
            tool_version=start.tool_version,
            tenant_id=tenant,
            params=dict(start.params),
        )
        existing_job = await self.reads.job(ref.namespace, start.job_name)
        if existing_job is not None:
            labels = (existing_job.get("metadata") or {}).get("labels") or {}
            if labels_match(labels, ref, start.step_id, start.attempt):
                log.info("adopting existing Job %s/%s", ref.namespace, start.job_name)
                return True
            return False
        tools = self.settings.tools
        token = mint_step_token(tools.step_token_secret, start.claims, tools.step_token_ttl_seconds)
        secret = build_step_secret(ref, start.step_id, start.attempt, start.secret_name, token)
        if not await self.kube.apply_owned_secret(ref.namespace, secret, ref.uid):
            return False
        # The tool pod continues this span's trace for its gateway calls.
        job = with_traceparent(start.job, current_traceparent())
        try:
            self.reads.created_job(await self.kube.create_job(ref.namespace, job))
        except Conflict:
            existing_job = await self.kube.get_job(ref.namespace, start.job_name)
            if existing_job is None:
                raise  # created and deleted in between: try again later
            labels = (existing_job.get("metadata") or {}).get("labels") or {}
            if not labels_match(labels, ref, start.step_id, start.attempt):
                return False
            log.info("adopted Job %s/%s created concurrently", ref.namespace, start.job_name)
        return True

    async def _record_events(self, run_id: UUID, decision: Decision) -> None:
        assert decision.db_tenant is not None
        if not decision.events:
            return
        with self.telemetry.span("record events", attributes={"sba.events": len(decision.events)}):
            await self._record_events_traced(run_id, decision)

    async def _record_events_traced(self, run_id: UUID, decision: Decision) -> None:
        assert decision.db_tenant is not None
        inserted = await self.events.append(
            run_id,
            decision.db_tenant,
            [
                NewEvent(
                    dedupe_key=e.dedupe_key,
                    type=str(e.type),
                    level=str(e.level),
                    payload=e.payload,
                )
                for e in decision.events
            ],
        )
        if not inserted:
            return
        self._count_events(decision, inserted)
        last_seq = inserted[-1].seq
        for delay in (*ANNOUNCE_BACKOFF, None):
            try:
                await announce(self.redis, str(run_id), last_seq)
                return
            except Exception as exc:  # Postgres holds the events; readers re-check on heartbeat
                if delay is None:
                    log.warning("could not announce run %s seq %d: %s", run_id, last_seq, exc)
                    return
                await asyncio.sleep(delay)

    def _count_events(self, decision: Decision, inserted: Sequence[Any]) -> None:
        """Metrics from the events this reconcile recorded (first time only: deduplicated)."""
        if self.metrics is None or decision.db_tenant is None:
            return
        tenant = decision.db_tenant
        for event in inserted:
            kind = str(event.type)
            outcome = _FINISHED_STEP_EVENTS.get(kind)
            if outcome is not None:
                tool = str((event.payload or {}).get("tool", "unknown"))
                self.metrics.tool_calls.labels(tenant=tenant, tool=tool, outcome=outcome).inc()
            elif kind in _TERMINAL_EVENTS:
                status = decision.status
                if status.started_at is not None and status.finished_at is not None:
                    seconds = max((status.finished_at - status.started_at).total_seconds(), 0.0)
                    self.metrics.run_duration.labels(tenant=tenant, phase=kind).observe(seconds)


_PLANNED_PHASES: Final = frozenset(
    {RunPhase.PENDING, RunPhase.PLANNING, RunPhase.EXECUTING, RunPhase.AWAITING_APPROVAL}
)


def _plan_of(record: RunPlanRecord) -> Plan:
    return Plan(
        steps=tuple(
            PlannedStep(str(s["id"]), str(s["tool"]), dict(s.get("params") or {}))
            for s in record.steps
        ),
        planner=record.planner,
        tokens_used=record.tokens_used,
        notes=tuple(str(n) for n in record.notes),
        model=record.model,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
    )
