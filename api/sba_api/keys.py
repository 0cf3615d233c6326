"""Typed keys of the application's state and of per-request values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sba_api.metrics import Metrics
from sba_api.services.artifacts import ArtifactService
from sba_api.services.events import EventService
from sba_api.services.gateway import GatewayService
from sba_api.services.knowledge import KnowledgeService
from sba_api.services.runs import RunService
from sba_api.services.system import SystemService
from sba_api.settings import Settings


@dataclass(frozen=True)
class Services:
    runs: RunService
    events: EventService
    artifacts: ArtifactService
    knowledge: KnowledgeService
    gateway: GatewayService
    system: SystemService


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
SERVICES = web.AppKey("services", Services)
OPENAPI = web.AppKey("openapi", dict[str, Any])

REQUEST_ID = web.RequestKey("request_id", str)
