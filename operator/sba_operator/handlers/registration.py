"""Kopf registration: which events call which driver, and how Kopf itself is configured.

Nothing is registered at import time on Kopf's global registry: `build_registry()`
returns a fresh registry, so tests and `main.run` get exactly these handlers.
Clients are created in `on.startup` from the settings in the memo and closed in
`on.cleanup` — no module-level clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from redis.asyncio import Redis

from sba_core import group
from sba_core.planning import BuiltinPlanner, Planner
from sba_core.tools.catalog import ToolCatalog
from sba_core.tools.registry import ToolRegistry, builtin_registry
from sba_operator.adapters.llm_planner import ChatCompletions, LLMPlanner
from sba_operator.handlers.errors import to_kopf
from sba_operator.handlers.indexes import KopfRunIndexes, register_indexes
from sba_operator.handlers.runs import PlannerFactory, RunDriver
from sba_operator.handlers.scheduler import WakeScheduler
from sba_operator.handlers.tenants import TenantDriver, platform_of, register_tenant_handlers
from sba_operator.handlers.tools import ToolDriver, register_tool_handlers
from sba_operator.handlers.webhooks import configure_webhook_server, register_webhooks
from sba_operator.kube import Kube, new_api_client
from sba_operator.kube.view import IndexedReads
from sba_operator.metrics import OperatorMetrics
from sba_operator.reconcile import KubeEvent
from sba_operator.settings import PlannerKind, PlannerSettings, Settings
from sba_store.audit import AuditRepository
from sba_store.db import Pool, create_pool
from sba_store.dead_letters import DeadLetterRepository
from sba_store.events import EventRepository
from sba_store.plans import RunPlanRepository, TokenUsageRepository
from sba_store.ratelimit import RateLimiter
from sba_store.runs import RunRepository
from sba_store.tenants import TenantRepository
from sba_store.tool_calls import ToolCallRepository
from sba_telemetry import Telemetry, bind_log_context

log = logging.getLogger(__name__)

STORAGE_PREFIX = group.GROUP
MAX_RETRY_DELAY = 300.0


def post_kube_event(obj: Mapping[str, Any], event: KubeEvent) -> None:
    """Post a Kubernetes Event about `obj` through Kopf's (batched, retried) poster."""
    body = kopf.Body(cast(kopf.RawBody, dict(obj)))
    kopf.event(body, type=event.type, reason=event.reason, message=event.message)


class Retrier:
    """Event-driven retries for `on.event` handlers (which Kopf itself never retries).

    A failed reconcile is re-run once after a delay that doubles per
    consecutive failure of that key (capped); a success resets it. There is at
    most one pending retry per key, and no polling of healthy runs.
    """

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, int] = {}

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def schedule(self, key: str, delay: float, fn: Callable[[], Awaitable[None]]) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        effective = float(min(delay * (2 ** (failures - 1)), MAX_RETRY_DELAY))
        if key in self._pending:
            return effective

        async def later() -> None:
            try:
                await asyncio.sleep(effective)
            finally:
                self._pending.pop(key, None)
            await fn()

        self._pending[key] = asyncio.create_task(later(), name=f"retry:{key}")
        return effective

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)
        task = self._pending.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._pending.values())
        self._pending.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass
class OperatorContext:
    """Everything the handlers use, created once at startup and kept in Kopf's memo."""

    settings: Settings
    kube: Kube
    pool: Pool
    redis: Redis
    runs: RunDriver
    tenants: TenantDriver
    tools: ToolDriver
    retrier: Retrier = field(default_factory=Retrier)
    scheduler: WakeScheduler | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    llm: ChatCompletions | None = None
    """The LLM planner's client (None when the builtin planner plans)."""
    telemetry: Telemetry | None = None

    def create_scheduler(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        """The one wake-up scheduler of all runs (deadlines, backoffs, approval expiry);
        its loop starts with the first AgentRun event."""

        async def wake(namespace: str, name: str, uid: str) -> None:
            await self.reconcile_run(namespace, name, uid, logger)

        self.scheduler = WakeScheduler(wake)
        self.runs.scheduler = self.scheduler

    async def close(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.close()
        await self.retrier.close()
        self.metrics.close()
        if self.llm is not None:
            await self.llm.close()
        await self.redis.aclose()
        await self.pool.close()
        self.kube.close()
        if self.telemetry is not None:
            self.telemetry.shutdown()

    async def reconcile_run(
        self,
        namespace: str,
        name: str,
        uid: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        """Reconcile a run; a failure schedules a retry instead of being dropped."""
        with bind_log_context(run_id=uid):
            await self._reconcile_run(namespace, name, uid, logger)

    async def _reconcile_run(
        self,
        namespace: str,
        name: str,
        uid: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        started = time.perf_counter()
        try:
            await self.runs.reconcile(namespace, name, uid)
        except Exception as exc:
            self.metrics.reconcile_duration.labels(outcome="error").observe(
                time.perf_counter() - started
            )
            mapped = to_kopf(exc)
            if isinstance(mapped, kopf.TemporaryError):
                delay = self.retrier.schedule(
                    uid,
                    float(mapped.delay or 5),
                    lambda: self.reconcile_run(namespace, name, uid, logger),
                )
                logger.warning(
                    f"reconcile of {namespace}/{name} failed, retrying in {delay:.0f}s: {exc}"
                )
            else:
                logger.error(
                    f"reconcile of {namespace}/{name} failed permanently: {exc}", exc_info=exc
                )
            return
        self.metrics.reconcile_duration.labels(outcome="ok").observe(time.perf_counter() - started)
        if self.scheduler is not None:
            self.metrics.scheduled_wakeups.set(len(self.scheduler))
        self.retrier.succeeded(uid)


def llm_planner_factory(
    settings: PlannerSettings, client: ChatCompletions, registry: ToolRegistry
) -> PlannerFactory:
    """Per run: an LLM planner over the tools that run's tenant may use."""
    builtin = BuiltinPlanner(registry)

    def factory(tools: ToolRegistry) -> Planner:
        return LLMPlanner(
            client,
            tools,
            model=settings.model,
            fallback_model=settings.fallback_model,
            max_tokens=settings.max_tokens,
            builtin=builtin,
        )

    return factory


async def create_context(settings: Settings) -> OperatorContext:
    """Open the clients. A failure here is raised as Kopf's Temporary/PermanentError."""
    telemetry = Telemetry(settings.telemetry)
    telemetry.install()
    try:
        kube = Kube(
            new_api_client(settings.kubernetes.kubeconfig),
            settings.kubernetes.request_timeout,
            telemetry=telemetry,
        )
        pool = await create_pool(
            settings.database.url,
            min_size=settings.database.pool_min,
            max_size=settings.database.pool_max,
            application_name="sba-operator",
        )
        redis: Redis = Redis.from_url(settings.redis.url)
    except Exception as exc:
        raise to_kopf(exc) from exc
    registry = builtin_registry()
    catalog = ToolCatalog(registry)
    metrics = OperatorMetrics()
    planner = settings.planner
    llm: ChatCompletions | None = None
    factory: PlannerFactory | None = None
    if planner.kind is PlannerKind.LLM:
        llm = ChatCompletions(
            base_url=planner.base_url,
            api_key=planner.api_key,
            timeout_seconds=planner.timeout_seconds,
        )
        factory = llm_planner_factory(planner, llm, registry)
        log.info("planning prompt-only runs with %s at %s", planner.model, planner.base_url)
    elif planner.requested is PlannerKind.LLM:
        log.warning("SBA_PLANNER=llm but OPENAI_API_KEY is not set: using the builtin planner")
    return OperatorContext(
        settings=settings,
        kube=kube,
        pool=pool,
        redis=redis,
        metrics=metrics,
        llm=llm,
        telemetry=telemetry,
        runs=RunDriver(
            settings=settings,
            kube=kube,
            runs=RunRepository(pool),
            events=EventRepository(pool),
            tool_calls=ToolCallRepository(pool),
            redis=redis,
            catalog=catalog,
            post_event=post_kube_event,
            audit=AuditRepository(pool),
            dead_letters=DeadLetterRepository(pool),
            plans=RunPlanRepository(pool),
            token_usage=TokenUsageRepository(pool),
            planner_factory=factory,
            limiter=RateLimiter(redis, window_seconds=settings.quotas.tool_calls_window_seconds),
            metrics=metrics,
            telemetry=telemetry,
        ),
        tenants=TenantDriver(
            kube=kube,
            tenants=TenantRepository(pool),
            audit=AuditRepository(pool),
            post_event=post_kube_event,
            platform=platform_of(settings),
        ),
        tools=ToolDriver(kube, catalog),
    )


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Kopf's own settings: storage in annotations, watch timeouts, API retries, Events."""
    persistence = kopf_settings.persistence
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    persistence.finalizer = f"{STORAGE_PREFIX}/operator"

    watching = kopf_settings.watching
    watching.server_timeout = settings.kubernetes.server_timeout
    watching.client_timeout = settings.kubernetes.client_timeout
    watching.connect_timeout = settings.kubernetes.connect_timeout
    watching.reconnect_backoff = 1.0
    # Server-side filtering: only our tool Jobs and their pods reach the operator.
    watching.label_selectors["batch", "v1", "jobs"] = group.LABEL_RUN_UID
    watching.label_selectors["", "v1", "pods"] = group.LABEL_RUN_UID

    networking = kopf_settings.networking
    networking.request_timeout = settings.kubernetes.request_timeout
    networking.connect_timeout = settings.kubernetes.connect_timeout
    networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21)

    posting = kopf_settings.posting
    posting.level = logging.INFO
    posting.loggers = False  # only our explicit transition Events, not every log line
    posting.reporting_component = "sba-operator"
    posting.event_name_prefix = "sba-"

    kopf_settings.execution.max_workers = 16
    if settings.admission.enabled:
        configure_webhook_server(kopf_settings, settings.admission)


def _ctx(memo: kopf.Memo) -> OperatorContext:
    ctx = memo.get("ctx")
    if not isinstance(ctx, OperatorContext):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx


def _tools_if_ready(memo: kopf.Memo) -> ToolDriver | None:
    ctx = memo.get("ctx")
    return ctx.tools if isinstance(ctx, OperatorContext) else None


def _owner_run(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the AgentRun that controls a Job."""
    meta = body.get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == group.AGENTRUN_KIND and str(owner.get("apiVersion", "")).startswith(
            f"{group.GROUP}/"
        ):
            return str(owner.get("name")), str(owner.get("uid"))
    return None


def build_registry(*, admission: bool = False) -> kopf.OperatorRegistry:
    """`admission`: also serve the validating webhook (needs settings.admission)."""
    registry = kopf.OperatorRegistry()
    # What reconciles read, from memory (before any handler: Kopf fills them first).
    register_indexes(registry)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials the `kubernetes` client uses: in-cluster, else $KUBECONFIG.
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        ours = memo.get("settings")
        if not isinstance(ours, Settings):
            raise kopf.PermanentError("memo.settings must hold sba_operator.settings.Settings")
        configure_kopf(settings, ours)
        memo["ctx"] = ctx = await create_context(ours)
        indexes = KopfRunIndexes.from_kwargs(kwargs)
        if indexes is not None:  # live objects, still empty: Kopf fills them before handlers
            ctx.runs.reads = IndexedReads(indexes, ctx.kube)
            ctx.tenants.read_tenant = ctx.runs.reads.tenant
        try:
            await ctx.tools.load()  # before any run is reconciled against the catalog
        except Exception as exc:
            await ctx.close()
            raise to_kopf(exc) from exc
        ctx.create_scheduler(log)
        ctx.metrics.serve(ours.metrics.port, ours.metrics.host)
        log.info(
            "sba-operator started: namespaces=%s image=%s gateway=%s",
            ",".join(ours.kubernetes.namespaces) or "(all)",
            ours.tools.image,
            ours.tools.gateway_url,
        )

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        ctx = memo.get("ctx")
        if isinstance(ctx, OperatorContext):
            await ctx.close()

    @kopf.on.event(group.GROUP, group.VERSION, group.AGENTRUN_PLURAL, registry=registry)
    async def agentrun_event(
        event: Mapping[str, Any],
        body: kopf.Body,
        name: str,
        namespace: str | None,
        uid: str,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        ctx = _ctx(memo)
        if ctx.scheduler is not None:
            # Started from a handler, so its tasks inherit Kopf's context (Event posting).
            ctx.scheduler.start()
        if event.get("type") == "DELETED":
            ctx.retrier.forget(uid)
            ctx.runs.locks.forget(uid)
            try:
                await ctx.runs.record_deleted(body)
            except Exception as exc:  # best effort: the object is gone either way
                logger.warning(f"could not record the deletion of {namespace}/{name}: {exc}")
            return
        if namespace:
            await ctx.reconcile_run(namespace, name, uid, logger)

    @kopf.on.event(group.GROUP, group.VERSION, group.APPROVAL_PLURAL, registry=registry)
    async def approval_event(
        event: Mapping[str, Any],
        body: kopf.Body,
        name: str,
        namespace: str | None,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        # A new answer: reconcile the run it names, which validates and counts it.
        if event.get("type") == "DELETED" or not namespace:
            return
        if (body.get("status") or {}).get("outcome"):
            return
        ctx = _ctx(memo)
        run_name = str((body.get("spec") or {}).get("run", ""))
        try:
            run = await ctx.runs.reads.agentrun(namespace, run_name) if run_name else None
            if run is None:
                await ctx.runs.answer_orphan_approval(namespace, name, run_name)
                return
        except Exception as exc:
            raise to_kopf(exc) from exc
        uid = str((run.get("metadata") or {}).get("uid", ""))
        await ctx.reconcile_run(namespace, run_name, uid, logger)

    @kopf.on.event(
        "batch", "v1", "jobs", labels={group.LABEL_RUN_UID: kopf.PRESENT}, registry=registry
    )
    async def job_event(
        event: Mapping[str, Any],
        body: kopf.Body,
        namespace: str | None,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        # A Job's creation and progress are our own doing; its end (or loss) is news.
        if event.get("type") != "DELETED" and not _finished(body):
            return
        owner = _owner_run(body)
        if owner is None or not namespace:
            return
        run_name, run_uid = owner
        await _ctx(memo).reconcile_run(namespace, run_name, run_uid, logger)

    # Tenants: provisioning, drift of what they provisioned, orderly deletion (finalizer).
    register_tenant_handlers(registry, _ctx)
    # User tools: the catalog, kept current by watch events (filled at start-up).
    register_tool_handlers(registry, _ctx)
    if admission:
        register_webhooks(registry, _tools_if_ready)

    return registry


def _finished(body: Mapping[str, Any]) -> bool:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False
