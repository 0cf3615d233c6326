"""Tenant scoping: which tenant a request acts on, and whether its principal may.

A principal acts on its own tenant; a platform admin (tenants:admin) on any.
"""

from __future__ import annotations

from sba_api.errors import Forbidden
from sba_core.auth.permissions import Principal


class TenantForbidden(Forbidden):
    code = "tenant_forbidden"


def check_tenant(principal: Principal, tenant: str) -> None:
    if tenant != principal.tenant and not principal.is_platform_admin:
        # Same answer whether or not the tenant exists: nothing to probe.
        raise TenantForbidden("this token may not act on another tenant")


def scope_tenant(principal: Principal, requested: str | None) -> str:
    """The tenant a request names (or the principal's when it names none), if allowed."""
    tenant = requested or principal.tenant
    check_tenant(principal, tenant)
    return tenant
