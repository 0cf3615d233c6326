"""The pure Tenant reconcile: the tenant's namespace and its status.

Minimal provisioning: a namespace `tenant-<name>` labelled for Pod Security
"restricted", owned by the (cluster-scoped) Tenant so garbage collection
removes it with the Tenant. Quotas, RBAC and NetworkPolicy come later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from sba_core import group
from sba_core.models.tenant import TenantPhase, TenantSpec, TenantStatus
from sba_operator.reconcile.model import TenantView
from sba_operator.reconcile.runs import set_condition

PSS_LABELS: Final = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/audit-version": "latest",
}
COMPONENT_TENANT: Final = "tenant"


def tenant_view(tenant: Mapping[str, Any] | None) -> TenantView | None:
    """What a run needs to know about its Tenant; None when there is none."""
    if not tenant:
        return None
    name = str((tenant.get("metadata") or {}).get("name", ""))
    raw = tenant.get("spec") or {}
    suspended = bool(raw.get("suspended", False))
    allowed = raw.get("allowedTools")
    return TenantView(
        name=name,
        suspended=suspended,
        allowed_tools=tuple(str(t) for t in allowed) if isinstance(allowed, list) else None,
    )


def namespace_labels(tenant: str) -> dict[str, str]:
    return {
        **PSS_LABELS,
        group.LABEL_TENANT: tenant,
        group.LABEL_MANAGED_BY: group.MANAGED_BY,
        group.LABEL_COMPONENT: COMPONENT_TENANT,
    }


def tenant_owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": group.API_VERSION,
        "kind": group.TENANT_KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_namespace(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": group.tenant_namespace(name),
            "labels": namespace_labels(name),
            "ownerReferences": [tenant_owner_reference(name, uid)],
        },
    }


@dataclass(frozen=True)
class TenantDecision:
    spec: TenantSpec | None
    create_namespace: Mapping[str, Any] | None
    namespace_patch: Mapping[str, Any] | None
    status: TenantStatus
    status_changed: bool


def namespace_patch(tenant: str, uid: str, namespace: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patch bringing an existing namespace in line, or None when it already is.

    Owner references are added only to a namespace we created (it carries our
    tenant label); a pre-existing namespace is labelled but never adopted, so
    deleting the Tenant cannot delete somebody else's namespace.
    """
    meta = namespace.get("metadata") or {}
    labels = meta.get("labels") or {}
    ours = labels.get(group.LABEL_TENANT) == tenant
    wanted = namespace_labels(tenant)
    patch: dict[str, Any] = {}
    missing = {k: v for k, v in wanted.items() if labels.get(k) != v}
    if missing and ours:
        patch["labels"] = missing
    elif pss_missing := {k: v for k, v in missing.items() if k in PSS_LABELS}:
        patch["labels"] = pss_missing
    owners = meta.get("ownerReferences") or []
    adopt = ours and not any(o.get("uid") == uid or o.get("controller") for o in owners)
    if adopt:
        patch["ownerReferences"] = [*owners, tenant_owner_reference(tenant, uid)]
    return {"metadata": patch} if patch else None


def decide_tenant(
    tenant: Mapping[str, Any], namespace: Mapping[str, Any] | None, now: datetime
) -> TenantDecision:
    meta = tenant.get("metadata") or {}
    name = str(meta.get("name", ""))
    uid = str(meta.get("uid", ""))
    raw_status = tenant.get("status") or {}
    try:
        old = TenantStatus.model_validate(raw_status) if raw_status else TenantStatus()
    except ValidationError:
        old = TenantStatus()
    status = old.model_copy(deep=True)
    generation = meta.get("generation")
    if isinstance(generation, int):
        status.observed_generation = generation
    now = now.replace(microsecond=0)
    try:
        spec: TenantSpec | None = TenantSpec.model_validate(tenant.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        )
        status.phase = TenantPhase.FAILED
        status.conditions = set_condition(
            status.conditions, "Ready", "False", "InvalidSpec", problems, now
        )
        return TenantDecision(None, None, None, status, status.wire() != old.wire())
    ns_name = group.tenant_namespace(name)
    create = build_namespace(name, uid) if namespace is None else None
    patch = namespace_patch(name, uid, namespace) if namespace is not None else None
    status.phase = TenantPhase.READY
    status.namespace = ns_name
    message = f"namespace {ns_name} is ready (Pod Security: restricted)"
    if spec is not None and spec.suspended:
        message += "; the tenant is suspended: new runs are refused"
    status.conditions = set_condition(
        status.conditions, "Ready", "True", "NamespaceReady", message, now
    )
    return TenantDecision(spec, create, patch, status, status.wire() != old.wire())
