"""The `config` part of a tool step's envelope: egress allowlist and CRM endpoint.

The allowlist comes from the tenant's Tenant resource (`spec.egressAllowlist`), read
through Kubernetes and cached briefly per replica; a tenant without one (or without a
Tenant resource) gets the deployment default `SBA_DEFAULT_EGRESS_ALLOWLIST`. Only tools
that declare egress get an allowlist at all, so a knowledge search never waits on
Kubernetes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from sba_api.errors import ApiError
from sba_api.settings import ToolSettings
from sba_core.tools.contracts import StepConfig
from sba_core.tools.egress import validate_allowlist_entry
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolSpec

log = logging.getLogger(__name__)

TenantFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]
"""Tenant name → the Tenant resource, or None when there is none."""

_MAX_CACHED: Final = 10_000


def allowlist_of(tenant: dict[str, Any] | None) -> list[str] | None:
    """The Tenant's valid egress allowlist entries; None when it declares none."""
    if tenant is None:
        return None
    spec = tenant.get("spec")
    raw = spec.get("egressAllowlist") if isinstance(spec, dict) else None
    if not isinstance(raw, list):
        return None
    entries: list[str] = []
    for item in raw:
        try:
            entry = validate_allowlist_entry(str(item))
        except ValueError:
            # Admission should have refused it; never widen access because of it.
            log.warning("ignoring invalid egress allowlist entry %r", item)
            continue
        if entry not in entries:
            entries.append(entry)
    return entries


class StepConfigSource:
    def __init__(
        self,
        settings: ToolSettings,
        fetch_tenant: TenantFetcher | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._fetch_tenant = fetch_tenant
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str] | None]] = {}

    async def for_step(self, tenant: str, spec: ToolSpec | None) -> StepConfig:
        if spec is None or not spec.egress:
            return StepConfig()
        if spec.name == ToolName.CRM_SYNC:
            # crm.sync reaches only the deployment's CRM endpoint, never tenant hosts.
            return StepConfig(crm_url=self._settings.crm_url)
        declared = await self._tenant_allowlist(tenant)
        allowlist = (
            declared if declared is not None else list(self._settings.default_egress_allowlist)
        )
        return StepConfig(egress_allowlist=allowlist)

    async def _tenant_allowlist(self, tenant: str) -> list[str] | None:
        if self._fetch_tenant is None:
            return None
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._settings.egress_cache_seconds:
            return cached[1]
        try:
            value = allowlist_of(await self._fetch_tenant(tenant))
        except ApiError:
            if cached is None:
                raise  # 503/502: the tool pod retries rather than guessing an allowlist
            log.warning("using a stale egress allowlist for tenant %s", tenant)
            return cached[1]
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[tenant] = (now, value)
        return value
