"""Readiness checks and the tool catalog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from sba_api.bounded_map import BoundedMap
from sba_api.kube import TenantNotFound
from sba_api.schemas import Health, ToolCatalog, ToolInfo, UnusableTool
from sba_api.services.tool_catalog import ToolCatalogService
from sba_core.group import tenant_namespace
from sba_store.db import Pool, ping

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0


class SystemService:
    def __init__(
        self,
        pool: Pool,
        redis: Redis,
        tools: ToolCatalogService,
        get_tenant: Callable[[str], Awaitable[dict[str, Any] | None]],
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._tools = tools
        self._get_tenant = get_tenant
        self._listings = BoundedMap[str, tuple[object, object, ToolCatalog]](10_000)
        """tenant -> (catalog, allowedTools, answer): contracts are rendered once per change."""

    async def _postgres(self) -> None:
        await ping(self._pool)

    async def _redis_ping(self) -> None:
        await self._redis.ping()

    async def readiness(self) -> Health:
        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "postgres": self._postgres,
            "redis": self._redis_ping,
        }
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
                results[name] = "ok"
            except Exception as exc:
                log.warning("readiness check %s failed: %s", name, exc)
                results[name] = f"unavailable: {type(exc).__name__}"
        ok = all(value == "ok" for value in results.values())
        return Health(status="ok" if ok else "unavailable", checks=results)

    async def catalog(self, tenant: str) -> ToolCatalog:
        """What `tenant`'s runs may use: builtins, ClusterTools and its own Tools, as far
        as its spec.allowedTools lets them; and the tools defined for it that cannot run."""
        found = await self._get_tenant(tenant)
        if found is None:
            raise TenantNotFound(f"tenant {tenant!r} not found")
        allowed = (found.get("spec") or {}).get("allowedTools")
        namespace = tenant_namespace(tenant)
        catalog = await self._tools.catalog_for(namespace)
        allowed_key = tuple(allowed) if isinstance(allowed, list) else None
        known = self._listings.get(tenant)
        if known is not None and known[0] is catalog and known[1] == allowed_key:
            return known[2]
        registry = catalog.registry_for(namespace)
        names = sorted(n for n in registry if not isinstance(allowed, list) or n in allowed)
        unusable = [
            UnusableTool(name=d.name, kind=d.kind, message=d.problem or "")
            for d in sorted(catalog.definitions(namespace).values(), key=lambda d: d.name)
            if d.spec is None
        ]
        listing = ToolCatalog(
            tenant=tenant,
            items=[ToolInfo.model_validate(registry[n].catalog_entry()) for n in names],
            unusable=unusable,
        )
        self._listings.put(tenant, (catalog, allowed_key, listing))
        return listing
