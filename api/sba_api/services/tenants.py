"""Tenants through the API: the same Tenant resource GitOps applies; usage from Postgres."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sba_api.errors import Conflict, NotFound
from sba_api.kube import KubeClient
from sba_api.schemas import TenantCreateIn, TenantDeleted, TenantUsage, TenantView
from sba_api.services._boundary import store_boundary
from sba_api.services.access import check_tenant
from sba_api.services.audit import AuditService
from sba_core.auth.permissions import Principal
from sba_core.group import API_VERSION, LABEL_MANAGED_BY, MANAGED_BY, TENANT_KIND, tenant_namespace
from sba_core.models.tenant import TenantQuotas
from sba_store.usage import UsageRepository

log = logging.getLogger(__name__)


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class TenantExists(Conflict):
    code = "tenant_exists"


def _view(obj: dict[str, Any]) -> TenantView:
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name", ""))
    status = obj.get("status") or {}
    created = metadata.get("creationTimestamp")
    phase = status.get("phase")
    return TenantView(
        name=name,
        namespace=str(status.get("namespace") or tenant_namespace(name)),
        phase=phase if isinstance(phase, str) else None,
        spec=obj.get("spec") or {},
        status=status,
        created_at=datetime.fromisoformat(created.replace("Z", "+00:00"))
        if isinstance(created, str)
        else None,
    )


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def _known_name(name: str) -> str:
    if not _NAME.match(name):
        raise TenantNotFound(f"tenant {name[:64]!r} not found")
    return name


class TenantService:
    def __init__(self, kube: KubeClient, usage: UsageRepository, audit: AuditService) -> None:
        self._kube = kube
        self._usage = usage
        self._audit = audit

    async def get(self, principal: Principal, name: str) -> TenantView:
        check_tenant(principal, name)
        obj = await self._kube.get_tenant(_known_name(name))
        if obj is None:
            raise TenantNotFound(f"tenant {name!r} not found")
        return _view(obj)

    async def create(self, principal: Principal, body: TenantCreateIn) -> TenantView:
        manifest: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": TENANT_KIND,
            "metadata": {"name": body.name, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
            "spec": body.spec.wire(),
        }
        created = await self._kube.create_tenant(manifest)
        if created is None:
            raise TenantExists(f"tenant {body.name!r} already exists")
        await self._audit.record(
            principal,
            tenant=body.name,
            action="tenant.create",
            target=f"tenant/{body.name}",
            payload={"spec": body.spec.wire()},
        )
        return _view(created)

    async def delete(self, principal: Principal, name: str) -> TenantDeleted:
        if not await self._kube.delete_tenant(_known_name(name)):
            raise TenantNotFound(f"tenant {name!r} not found")
        await self._audit.record(
            principal, tenant=name, action="tenant.delete", target=f"tenant/{name}"
        )
        return TenantDeleted(name=name, deleted=True)

    async def usage(self, principal: Principal, name: str, since: datetime | None) -> TenantUsage:
        check_tenant(principal, _known_name(name))
        with store_boundary("read the tenant's usage"):
            record = await self._usage.for_tenant(name, since=since)
        return TenantUsage(
            tenant=name,
            since=since,
            runs_total=sum(record.runs_by_phase.values()),
            runs_by_phase=record.runs_by_phase,
            tool_calls=record.tool_calls,
            tool_calls_failed=record.tool_calls_failed,
            run_seconds=round(record.run_seconds, 3),
        )

    async def request_quota(self, name: str) -> int | None:
        """spec.quotas.apiRequestsPerMinute of the Tenant resource, if it sets one."""
        if not _NAME.match(name):
            return None
        obj = await self._kube.get_tenant(name)
        if obj is None:
            return None
        raw = ((obj.get("spec") or {}).get("quotas")) or {}
        try:
            return TenantQuotas.model_validate(raw).api_requests_per_minute
        except ValidationError:
            log.warning("tenant %s has quotas this API cannot parse", name)
            return None
