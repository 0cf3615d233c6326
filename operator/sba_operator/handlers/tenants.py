"""The tenant driver: ensure the tenant's namespace and DB row, then report status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sba_core import group
from sba_operator.handlers.runs import PostEvent
from sba_operator.kube import Conflict, Kube
from sba_operator.reconcile import KubeEvent, TenantDecision, decide_tenant
from sba_store.tenants import TenantRepository

log = logging.getLogger(__name__)


class TenantDriver:
    def __init__(
        self,
        *,
        kube: Kube,
        tenants: TenantRepository,
        post_event: PostEvent,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.tenants = tenants
        self.post_event = post_event
        self.clock = clock

    async def reconcile(self, name: str) -> TenantDecision | None:
        tenant = await self.kube.get_tenant(name)
        if tenant is None or (tenant.get("metadata") or {}).get("deletionTimestamp"):
            return None
        ns_name = group.tenant_namespace(name)
        namespace = await self.kube.get_namespace(ns_name)
        decision = decide_tenant(tenant, namespace, self.clock())
        if decision.spec is not None:
            await self.tenants.upsert(name, decision.spec.display_name, decision.spec.plan)
        if decision.create_namespace is not None:
            try:
                await self.kube.create_namespace(decision.create_namespace)
                log.info("created namespace %s for tenant %s", ns_name, name)
            except Conflict:
                # Created concurrently: bring it in line on this same pass.
                namespace = await self.kube.get_namespace(ns_name)
                if namespace is not None:
                    decision = decide_tenant(tenant, namespace, self.clock())
        if decision.namespace_patch is not None:
            await self.kube.patch_namespace(ns_name, decision.namespace_patch)
        if decision.status_changed:
            await self.kube.patch_tenant_status(name, decision.status.wire())
            ready = next((c for c in decision.status.conditions if c.type == "Ready"), None)
            if ready is not None:
                event = KubeEvent(
                    "Normal" if ready.status == "True" else "Warning", ready.reason, ready.message
                )
                try:
                    self.post_event(tenant, event)
                except Exception:
                    log.warning("could not post event for tenant %s", name)
        return decision
