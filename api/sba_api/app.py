"""The application factory: `create_app(settings)`.

Clients (Postgres pool, Redis, the run-event listener, Kubernetes, the
embeddings HTTP session) are created in a cleanup context when the app
starts and closed when it stops; nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from sba_api.auth.middleware import AUTHENTICATOR, ROUTE_SPECS, Authenticator, auth_middleware
from sba_api.embedding_openai import OpenAIEmbedder
from sba_api.keys import LIMITS, METRICS, OPENAPI, SERVICES, SETTINGS, TELEMETRY, Services
from sba_api.kube import KubeClient, build_api_client, custom_object_cache
from sba_api.metrics import Metrics
from sba_api.middleware import add_request_id_header, api_middleware
from sba_api.openapi import build_openapi
from sba_api.ratelimit import RateLimiter, RequestLimits, StreamSlots, TenantQuotaCache
from sba_api.routes import ROUTES, TAGS, add_routes
from sba_api.services.agui import AguiService
from sba_api.services.artifacts import ArtifactService
from sba_api.services.audit import AuditService
from sba_api.services.events import EventService
from sba_api.services.gateway import GatewayService
from sba_api.services.idempotency import IdempotencyService
from sba_api.services.knowledge import KnowledgeService
from sba_api.services.model_config import ModelConfigSource
from sba_api.services.model_gateway import ModelGatewayService
from sba_api.services.plans import PlanService
from sba_api.services.run_actions import RunActionService
from sba_api.services.runs import RunService
from sba_api.services.step_config import StepConfigSource
from sba_api.services.step_progress import StepProgressService
from sba_api.services.stream_tokens import StreamTokenService
from sba_api.services.system import SystemService
from sba_api.services.tasks import TaskService
from sba_api.services.tenants import TenantService
from sba_api.services.tool_catalog import ToolCatalogService
from sba_api.services.tool_execution import ToolExecutionService
from sba_api.settings import EmbeddingProvider, Settings
from sba_api.watch_cache import WatchCache
from sba_core.group import AGENTRUN_PLURAL, CLUSTERTOOL_PLURAL, TENANT_PLURAL, TOOL_PLURAL
from sba_core.knowledge import Embedder, HashingEmbedder
from sba_core.tools.registry import builtin_registry
from sba_llm import BuiltinModel, CircuitBreaker, ModelRouter
from sba_store.agui import AguiRunRepository
from sba_store.artifacts import ArtifactRepository
from sba_store.audit import AuditRepository
from sba_store.db import create_pool
from sba_store.eventbus import RunEventListener
from sba_store.events import EventRepository
from sba_store.idempotency import IdempotencyRepository
from sba_store.knowledge import KnowledgeRepository
from sba_store.plans import TokenUsageRepository
from sba_store.runs import RunRepository
from sba_store.tasks import TaskRepository
from sba_store.tool_calls import ToolCallRepository
from sba_store.usage import UsageRepository
from sba_telemetry import Telemetry

log = logging.getLogger(__name__)

API_TITLE = "SBA Agentic API"
API_VERSION = "0.1.0"


async def _build_services(
    settings: Settings,
    stack: AsyncExitStack,
    telemetry: Telemetry | None = None,
    metrics: Metrics | None = None,
) -> Services:
    pool = await create_pool(
        settings.database.url,
        min_size=settings.database.min_pool_size,
        max_size=settings.database.max_pool_size,
        application_name="sba-api",
    )
    stack.push_async_callback(pool.close)

    redis = Redis.from_url(settings.redis.url)
    stack.push_async_callback(redis.aclose)
    listener = RunEventListener(redis)
    await listener.start()
    stack.push_async_callback(listener.stop)

    api_client = await asyncio.to_thread(build_api_client, settings.kubernetes)
    runs_cache: WatchCache | None = None
    tool_caches: tuple[WatchCache, WatchCache] | None = None
    tenants_cache: WatchCache | None = None
    if settings.kubernetes.watch_cache:
        # Its own client: the long watches hold connections the request threads need not share.
        watch_client = await asyncio.to_thread(build_api_client, settings.kubernetes)
        stack.callback(watch_client.close)
        runs_cache = custom_object_cache(watch_client, AGENTRUN_PLURAL)
        tool_caches = (
            custom_object_cache(watch_client, CLUSTERTOOL_PLURAL),
            custom_object_cache(watch_client, TOOL_PLURAL),
        )
        tenants_cache = custom_object_cache(watch_client, TENANT_PLURAL)
        for cache in (runs_cache, tenants_cache, *tool_caches):
            cache.start()
            stack.callback(cache.stop)
    kube = KubeClient(api_client, telemetry, runs_cache=runs_cache, tenants_cache=tenants_cache)
    stack.push_async_callback(kube.aclose)

    embedder: Embedder
    if settings.embeddings.provider is EmbeddingProvider.OPENAI:
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        embedder = OpenAIEmbedder(
            session,
            base_url=settings.embeddings.base_url,
            model=settings.embeddings.model,
            api_key=settings.embeddings.api_key,
            batch_size=settings.embeddings.batch_size,
            timeout_seconds=settings.embeddings.timeout_seconds,
        )
    else:
        embedder = HashingEmbedder()

    tools = ToolCatalogService(kube, builtin_registry(), watched=tool_caches)
    audit = AuditService(AuditRepository(pool))
    run_service = RunService(RunRepository(pool), kube, tools, AuditRepository(pool))
    run_actions = RunActionService(
        run_service,
        kube,
        audit,
        approval_wait_seconds=settings.run_actions.approval_wait_seconds,
    )
    knowledge = KnowledgeService(KnowledgeRepository(pool), embedder)
    artifacts = ArtifactService(ArtifactRepository(pool), run_service)

    def on_tokens(tenant: str, tokens: int) -> None:
        if metrics is not None:
            metrics.llm_tokens.labels(tenant=tenant).inc(tokens)

    gateway = GatewayService(
        settings.gateway.step_token_secret,
        ToolCallRepository(pool),
        tools,
        knowledge,
        artifacts,
        step_config=StepConfigSource(settings.tools, kube.get_tenant),
        audit=AuditRepository(pool),
    )
    router = ModelRouter(
        breaker=CircuitBreaker(
            threshold=settings.models.breaker_threshold,
            cooldown_seconds=settings.models.breaker_cooldown_seconds,
        ),
        builtin=BuiltinModel(piece_delay_seconds=settings.models.builtin_piece_delay_seconds),
    )
    stack.push_async_callback(router.close)
    models = ModelGatewayService(
        gateway,
        router,
        ModelConfigSource(settings.models, kube.get_tenant, kube.get_secret_value),
        runs=RunRepository(pool),
        tool_calls=ToolCallRepository(pool),
        events=EventRepository(pool),
        token_usage=TokenUsageRepository(pool),
        redis=redis,
        flush_seconds=settings.models.token_flush_seconds,
        on_tokens=on_tokens,
    )
    return Services(
        runs=run_service,
        events=EventService(
            run_service,
            EventRepository(pool),
            listener,
            heartbeat_seconds=settings.sse.heartbeat_seconds,
            batch_size=settings.sse.batch_size,
            tail_events=settings.sse.tail_events,
            tail_bytes=settings.sse.tail_bytes,
            write_timeout_seconds=settings.sse.write_timeout_seconds,
        ),
        artifacts=artifacts,
        knowledge=knowledge,
        gateway=gateway,
        models=models,
        progress=StepProgressService(gateway, EventRepository(pool), redis),
        plans=PlanService(kube, tools),
        system=SystemService(pool, redis, tools, kube.read_tenant),
        tenants=TenantService(kube, UsageRepository(pool), audit),
        audit=audit,
        stream_tokens=StreamTokenService(
            run_service,
            settings.auth.stream_token_secret,
            settings.auth.stream_token_ttl_seconds,
        ),
        tasks=TaskService(TaskRepository(pool), ToolCallRepository(pool)),
        run_actions=run_actions,
        agui=AguiService(run_service, run_actions, AguiRunRepository(pool), EventRepository(pool)),
        tool_execution=ToolExecutionService(run_service, tools),
        idempotency=IdempotencyService(IdempotencyRepository(pool), settings.idempotency),
    )


async def _resources(app: web.Application) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        app[SERVICES] = await _build_services(app[SETTINGS], stack, app[TELEMETRY], app[METRICS])
        log.info("API resources ready")
        yield


async def _request_limits(app: web.Application) -> AsyncIterator[None]:
    """Rate limits and the SSE stream cap, in Redis (after `_resources`: reads tenants)."""
    config = app[SETTINGS].rate_limits
    if not config.enabled:
        yield
        return
    redis = Redis.from_url(app[SETTINGS].redis.url)
    metrics = app[METRICS]
    tenants = app[SERVICES].tenants

    def violated(tenant: str, user: str, scope: str) -> None:
        metrics.rate_limit_violations.labels(tenant=tenant, scope=scope).inc()

    app[LIMITS] = RequestLimits(
        RateLimiter(redis, window_seconds=config.window_seconds),
        StreamSlots(redis, lease_seconds=config.sse_lease_seconds),
        window_seconds=config.window_seconds,
        tenant_requests=config.tenant_requests,
        principal_requests=config.principal_requests,
        sse_streams_per_tenant=config.sse_streams_per_tenant,
        quotas=TenantQuotaCache(
            tenants.request_quota, ttl_seconds=config.tenant_quota_cache_seconds
        ),
        on_violation=violated,
    )
    try:
        yield
    finally:
        await redis.aclose()


async def _close_authenticator(app: web.Application) -> None:
    await app[AUTHENTICATOR].close()


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """Build the application. Pass `services` to run without real backends (unit tests).

    `telemetry`: the process's tracer provider (`main.run` makes it); by default one is
    built from `settings.telemetry`.
    """
    app = web.Application(
        middlewares=[api_middleware, auth_middleware],
        client_max_size=max(settings.http.max_body_bytes, settings.http.max_artifact_bytes) + 1,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[TELEMETRY] = telemetry or Telemetry(settings.telemetry)
    app[OPENAPI] = build_openapi(ROUTES, title=API_TITLE, version=API_VERSION, tags=TAGS)
    add_routes(app)
    app[ROUTE_SPECS] = {route.operation_id: route for route in ROUTES}
    app[AUTHENTICATOR] = Authenticator(settings.auth)
    app.on_cleanup.append(_close_authenticator)
    app.on_response_prepare.append(add_request_id_header)
    if services is not None:
        app[SERVICES] = services
    else:
        app.cleanup_ctx.append(_resources)
        app.cleanup_ctx.append(_request_limits)
    return app
