"""The pure Tenant reconcile: the tenant's namespace, what it should contain, and its status.

The driver (sba_operator.handlers.tenants) reads the Tenant and its namespace,
asks `decide_namespace` what to do with the namespace, ensures every object of
`tenant_objects.desired_objects` (creating, replacing or deleting through
`tenant_objects.plan_object`), and reports the outcome with `tenant_status`.

A namespace we did not create (no tenant label of ours) is labelled for Pod
Security but never adopted, so deleting the Tenant can never delete it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from sba_core import group
from sba_core.models.run import Condition
from sba_core.models.tenant import ProvisionedObject, TenantPhase, TenantSpec, TenantStatus
from sba_operator.reconcile.admission import COND_READY, is_ready, ready_condition, tenant_view
from sba_operator.reconcile.runs import set_condition
from sba_operator.reconcile.tenant_objects import COMPONENT, owner_reference

PSS_LABELS: Final = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/audit-version": "latest",
}
COMPONENT_TENANT: Final = COMPONENT

# Reasons of the Ready condition.
REASON_PROVISIONED: Final = "Provisioned"
REASON_PROVISIONING: Final = "Provisioning"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_NAMESPACE_TERMINATING: Final = "NamespaceTerminating"
REASON_TERMINATING: Final = "Terminating"

__all__ = [
    "COND_READY",
    "NamespaceDecision",
    "Outcome",
    "build_namespace",
    "decide_namespace",
    "is_ready",
    "namespace_is_ours",
    "namespace_labels",
    "namespace_patch",
    "parse_spec",
    "ready_condition",
    "tenant_owner_reference",
    "tenant_status",
    "tenant_view",
]


def namespace_labels(tenant: str) -> dict[str, str]:
    return {
        **PSS_LABELS,
        group.LABEL_TENANT: tenant,
        group.LABEL_MANAGED_BY: group.MANAGED_BY,
        group.LABEL_COMPONENT: COMPONENT_TENANT,
    }


def tenant_owner_reference(name: str, uid: str) -> dict[str, Any]:
    return owner_reference(name, uid)


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


def namespace_is_ours(tenant: str, namespace: Mapping[str, Any]) -> bool:
    """Created by us for this tenant (and so ours to delete)."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(group.LABEL_TENANT) == tenant)


def namespace_patch(tenant: str, uid: str, namespace: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patch bringing an existing namespace in line, or None when it already is.

    Owner references are added only to a namespace we created (it carries our
    tenant label); a pre-existing namespace is labelled but never adopted, so
    deleting the Tenant cannot delete somebody else's namespace.
    """
    meta = namespace.get("metadata") or {}
    labels = meta.get("labels") or {}
    ours = namespace_is_ours(tenant, namespace)
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


@dataclass(frozen=True)
class NamespaceDecision:
    spec: TenantSpec | None
    """None when the spec is invalid (`problems` says why)."""
    problems: str | None
    create_namespace: Mapping[str, Any] | None
    namespace_patch: Mapping[str, Any] | None


def parse_spec(tenant: Mapping[str, Any]) -> tuple[TenantSpec | None, str | None]:
    try:
        return TenantSpec.model_validate(tenant.get("spec") or {}), None
    except ValidationError as exc:
        return None, "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        )


def decide_namespace(
    tenant: Mapping[str, Any], namespace: Mapping[str, Any] | None
) -> NamespaceDecision:
    meta = tenant.get("metadata") or {}
    name = str(meta.get("name", ""))
    uid = str(meta.get("uid", ""))
    spec, problems = parse_spec(tenant)
    if spec is None:
        return NamespaceDecision(None, problems, None, None)
    create = build_namespace(name, uid) if namespace is None else None
    patch = namespace_patch(name, uid, namespace) if namespace is not None else None
    return NamespaceDecision(spec, None, create, patch)


@dataclass(frozen=True)
class Outcome:
    """What the driver found and did while provisioning."""

    provisioned: Sequence[ProvisionedObject] = ()
    waiting_for: str | None = None
    """Why the tenant is not ready yet though nothing failed (e.g. quota not yet counted)."""
    namespace_terminating: bool = False
    problems: str | None = None
    """The spec is invalid."""
    terminating: bool = False


def _old_status(tenant: Mapping[str, Any]) -> TenantStatus:
    raw = tenant.get("status") or {}
    try:
        return TenantStatus.model_validate(raw) if raw else TenantStatus()
    except ValidationError:
        return TenantStatus()


def tenant_status(
    tenant: Mapping[str, Any], outcome: Outcome, now: datetime
) -> tuple[TenantStatus, bool]:
    """The Tenant's new status and whether it differs from the stored one."""
    meta = tenant.get("metadata") or {}
    old = _old_status(tenant)
    status = old.model_copy(deep=True)
    generation = meta.get("generation")
    if isinstance(generation, int):
        status.observed_generation = generation
    now = now.replace(microsecond=0)
    ns_name = group.tenant_namespace(str(meta.get("name", "")))
    status.namespace = ns_name

    def ready(flag: str, reason: str, message: str) -> list[Condition]:
        return set_condition(status.conditions, COND_READY, flag, reason, message, now)

    if outcome.terminating:
        status.phase = TenantPhase.TERMINATING
        status.conditions = ready(
            "False", REASON_TERMINATING, outcome.waiting_for or "the tenant is being deleted"
        )
    elif outcome.problems is not None:
        status.phase = TenantPhase.FAILED
        status.conditions = ready("False", REASON_INVALID_SPEC, outcome.problems)
    elif outcome.namespace_terminating:
        status.phase = TenantPhase.PENDING
        status.conditions = ready(
            "False",
            REASON_NAMESPACE_TERMINATING,
            f"namespace {ns_name} is being deleted; it is re-created once it is gone",
        )
    elif outcome.waiting_for is not None:
        status.phase = TenantPhase.PENDING
        status.provisioned = list(outcome.provisioned)
        status.conditions = ready("False", REASON_PROVISIONING, outcome.waiting_for)
    else:
        status.phase = TenantPhase.READY
        status.provisioned = list(outcome.provisioned)
        spec, _ = parse_spec(tenant)
        message = (
            f"namespace {ns_name} and its {len(outcome.provisioned) - 1} objects are provisioned"
            " (Pod Security: restricted)"
        )
        if spec is not None and spec.suspended:
            message += "; the tenant is suspended: new runs are refused"
        status.conditions = ready("True", REASON_PROVISIONED, message)
    return status, status.wire() != old.wire()
