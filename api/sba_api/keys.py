"""Typed keys of the application's state and of per-request values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sba_api.metrics import Metrics
from sba_api.ratelimit import RequestLimits
from sba_api.services.agui import AguiService
from sba_api.services.artifacts import ArtifactService
from sba_api.services.audit import AuditService
from sba_api.services.events import EventService
from sba_api.services.gateway import GatewayService
from sba_api.services.idempotency import IdempotencyService
from sba_api.services.knowledge import KnowledgeService
from sba_api.services.model_gateway import ModelGatewayService
from sba_api.services.plans import PlanService
from sba_api.services.run_actions import RunActionService
from sba_api.services.runs import RunService
from sba_api.services.step_progress import StepProgressService
from sba_api.services.stream_tokens import StreamTokenService
from sba_api.services.system import SystemService
from sba_api.services.tasks import TaskService
from sba_api.services.tenants import TenantService
from sba_api.services.tool_execution import ToolExecutionService
from sba_api.settings import Settings
from sba_core.auth.permissions import Principal
from sba_telemetry import Telemetry


@dataclass(frozen=True)
class Services:
    runs: RunService
    events: EventService
    artifacts: ArtifactService
    knowledge: KnowledgeService
    gateway: GatewayService
    system: SystemService
    tenants: TenantService
    audit: AuditService
    stream_tokens: StreamTokenService
    tasks: TaskService | None = None
    """task.create's store behind /internal/v1/tasks (None: answered 503)."""
    run_actions: RunActionService | None = None
    """Approve, cancel, continue (None: answered 503)."""
    tool_execution: ToolExecutionService | None = None
    idempotency: IdempotencyService | None = None
    """None: Idempotency-Key is not honoured (in-process unit-test apps only)."""
    agui: AguiService | None = None
    """POST /agui and GET /runs/{id}/agui (None: answered 503)."""
    plans: PlanService | None = None
    """POST /api/v1/plan (None: answered 503)."""
    models: ModelGatewayService | None = None
    progress: StepProgressService | None = None
    """llm.generate's model calls behind /internal/v1/model/generate (None: answered 503)."""


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
TELEMETRY = web.AppKey("telemetry", Telemetry)
SERVICES = web.AppKey("services", Services)
OPENAPI = web.AppKey("openapi", dict[str, Any])
LIMITS = web.AppKey("request_limits", RequestLimits)
"""Present when Redis is: request rate limits and the SSE stream cap."""

REQUEST_ID = web.RequestKey("request_id", str)
RAW_BODY = web.RequestKey("raw_body", bytes)
"""The request body, when something read it before the handler (idempotency keys)."""
PRINCIPAL = web.RequestKey("principal", Principal)
"""Set by the auth middleware on every bearer-authenticated route."""
