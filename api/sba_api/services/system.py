"""Readiness checks and the tool catalog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from sba_api.schemas import Health, ToolCatalog, ToolInfo
from sba_core.tools.registry import ToolRegistry
from sba_store.db import Pool, ping

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0


class SystemService:
    def __init__(self, pool: Pool, redis: Redis, registry: ToolRegistry) -> None:
        self._pool = pool
        self._redis = redis
        self._registry = registry

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

    def catalog(self) -> ToolCatalog:
        return ToolCatalog(
            items=[
                ToolInfo.model_validate(self._registry[name].catalog_entry())
                for name in sorted(self._registry)
            ]
        )
