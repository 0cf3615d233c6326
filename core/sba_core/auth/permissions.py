"""Roles and the `resource:action` permissions they grant — the one table.

The API checks permissions, never role names, so adding a role is a change
to this table alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Permission(StrEnum):
    RUNS_CREATE = "runs:create"
    RUNS_READ = "runs:read"
    RUNS_APPROVE = "runs:approve"
    RUNS_CANCEL = "runs:cancel"
    RUNS_CONTINUE = "runs:continue"
    TOOLS_READ = "tools:read"
    TOOLS_EXECUTE = "tools:execute"
    KNOWLEDGE_READ = "knowledge:read"
    KNOWLEDGE_WRITE = "knowledge:write"
    USAGE_READ = "usage:read"
    AUDIT_READ = "audit:read"
    TENANTS_READ = "tenants:read"
    TENANTS_ADMIN = "tenants:admin"
    """Create, change and delete tenants: a platform permission, not a tenant one."""


_VIEWER: Final = frozenset({Permission.RUNS_READ, Permission.TOOLS_READ, Permission.KNOWLEDGE_READ})
_MEMBER: Final = _VIEWER | {
    Permission.RUNS_CREATE,
    Permission.RUNS_CANCEL,
    Permission.RUNS_CONTINUE,
    Permission.TOOLS_EXECUTE,
    Permission.KNOWLEDGE_WRITE,
}
_APPROVER: Final = _VIEWER | {Permission.RUNS_APPROVE}
_TENANT_ADMIN: Final = (
    _MEMBER
    | _APPROVER
    | {
        Permission.USAGE_READ,
        Permission.AUDIT_READ,
        Permission.TENANTS_READ,
    }
)
_PLATFORM_ADMIN: Final = _TENANT_ADMIN | {Permission.TENANTS_ADMIN}

ROLE_PERMISSIONS: Final[Mapping[str, frozenset[Permission]]] = {
    "viewer": _VIEWER,
    "member": _MEMBER,
    "approver": _APPROVER,
    "tenant-admin": _TENANT_ADMIN,
    "platform-admin": _PLATFORM_ADMIN,
}


def permissions_for(roles: Iterable[str]) -> frozenset[Permission]:
    """The union of what the roles grant; unknown roles grant nothing."""
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as the API's auth middleware establishes it."""

    user: str
    tenant: str
    roles: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)
    """The identity provider's groups (optional `groups` claim): for approvers named by group."""

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_for(self.roles)

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def is_platform_admin(self) -> bool:
        return Permission.TENANTS_ADMIN in self.permissions
