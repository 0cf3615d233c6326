"""Pure builders of everything a Tenant provisions, and the comparisons that detect drift.

Every namespaced object lives in `tenant-<name>`, carries the labels
`app.kubernetes.io/managed-by=sba-agentic` and `sba-agentic.io/tenant=<name>`
(how the operator finds and watches them) and is owned by the Tenant, so
garbage collection removes whatever the orderly deletion missed. The
ClusterRoles are shared by all tenants and owned by none.

`differs(desired, actual)` compares only what we declare (labels we set, our
owner reference, and the kind's spec), with quantities compared by value, so
the API server's normalisation (`0.5` → `500m`) is never mistaken for drift.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from sba_core import group
from sba_core.models.tenant import MemberRole, TenantMember, TenantSpec

COMPONENT: Final = "tenant"
TOOL_SERVICE_ACCOUNT: Final = "sba-tool-runner"
"""The ServiceAccount tool Jobs run as: no token, no bindings."""

RESOURCE_QUOTA: Final = "sba-tenant-quota"
LIMIT_RANGE: Final = "sba-tenant-limits"
NP_DEFAULT_DENY: Final = "sba-default-deny"
NP_ALLOW_DNS: Final = "sba-allow-dns"
NP_ALLOW_GATEWAY: Final = "sba-allow-gateway"
NP_ALLOW_EGRESS: Final = "sba-allow-egress-allowlist"
ROLE_BINDING_PREFIX: Final = "sba-member-"

RBAC_GROUP: Final = "rbac.authorization.k8s.io"

# LimitRange defaults: a container without requests/limits still fits the quota.
CONTAINER_DEFAULTS: Final = {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "256Mi"}
CONTAINER_DEFAULT_REQUESTS: Final = {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "16Mi"}


class Kind(StrEnum):
    """The namespaced kinds a Tenant provisions (besides its Namespace)."""

    RESOURCE_QUOTA = "ResourceQuota"
    LIMIT_RANGE = "LimitRange"
    NETWORK_POLICY = "NetworkPolicy"
    SERVICE_ACCOUNT = "ServiceAccount"
    ROLE_BINDING = "RoleBinding"


API_VERSIONS: Final[Mapping[Kind, str]] = {
    Kind.RESOURCE_QUOTA: "v1",
    Kind.LIMIT_RANGE: "v1",
    Kind.NETWORK_POLICY: "networking.k8s.io/v1",
    Kind.SERVICE_ACCOUNT: "v1",
    Kind.ROLE_BINDING: f"{RBAC_GROUP}/v1",
}


@dataclass(frozen=True)
class Platform:
    """Where the tool gateway runs, as the tenant NetworkPolicy must allow it."""

    gateway_namespace: str = "sba-system"
    gateway_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "sba-agentic-api"}
    )
    gateway_port: int = 8080


def gateway_port(url: str) -> int:
    """The TCP port of the gateway URL (the scheme's default when absent)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def tenant_labels(tenant: str) -> dict[str, str]:
    return {
        group.LABEL_MANAGED_BY: group.MANAGED_BY,
        group.LABEL_TENANT: tenant,
        group.LABEL_COMPONENT: COMPONENT,
    }


def owner_reference(tenant: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": group.API_VERSION,
        "kind": group.TENANT_KIND,
        "name": tenant,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(name: str, tenant: str, uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": group.tenant_namespace(tenant),
        "labels": tenant_labels(tenant),
        "ownerReferences": [owner_reference(tenant, uid)],
    }


# -- the objects ---------------------------------------------------------------------------


def build_resource_quota(tenant: str, uid: str, spec: TenantSpec) -> dict[str, Any]:
    compute = spec.quotas.compute
    return {
        "apiVersion": "v1",
        "kind": Kind.RESOURCE_QUOTA.value,
        "metadata": _meta(RESOURCE_QUOTA, tenant, uid),
        "spec": {
            "hard": {
                "pods": str(compute.pods),
                "requests.cpu": compute.cpu,
                "limits.cpu": compute.cpu,
                "requests.memory": compute.memory,
                "limits.memory": compute.memory,
                "requests.ephemeral-storage": compute.ephemeral_storage,
                "limits.ephemeral-storage": compute.ephemeral_storage,
                "count/jobs.batch": str(compute.jobs),
            }
        },
    }


def build_limit_range(tenant: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": Kind.LIMIT_RANGE.value,
        "metadata": _meta(LIMIT_RANGE, tenant, uid),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": dict(CONTAINER_DEFAULTS),
                    "defaultRequest": dict(CONTAINER_DEFAULT_REQUESTS),
                }
            ]
        },
    }


def _network_policy(name: str, tenant: str, uid: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": Kind.NETWORK_POLICY.value,
        "metadata": _meta(name, tenant, uid),
        "spec": dict(spec),
    }


def egress_cidrs(spec: TenantSpec) -> list[str]:
    """The allowlist's CIDRs and IP addresses (as /32 or /128), canonical and sorted."""
    cidrs: set[str] = set()
    for entry in spec.egress_allowlist:
        try:
            cidrs.add(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            continue  # a host name: enforced by the tools, not by the NetworkPolicy
    return sorted(cidrs)


def build_network_policies(
    tenant: str, uid: str, spec: TenantSpec, platform: Platform
) -> list[dict[str, Any]]:
    """Default deny (ingress and egress), then DNS, the tool gateway and allowlisted CIDRs."""
    every_pod: dict[str, Any] = {}
    policies = [
        _network_policy(
            NP_DEFAULT_DENY,
            tenant,
            uid,
            {"podSelector": every_pod, "policyTypes": ["Ingress", "Egress"]},
        ),
        _network_policy(
            NP_ALLOW_DNS,
            tenant,
            uid,
            {
                "podSelector": every_pod,
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [
                            {"protocol": "UDP", "port": 53},
                            {"protocol": "TCP", "port": 53},
                        ],
                    }
                ],
            },
        ),
        _network_policy(
            NP_ALLOW_GATEWAY,
            tenant,
            uid,
            {
                "podSelector": every_pod,
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": platform.gateway_namespace
                                    }
                                },
                                "podSelector": {"matchLabels": dict(platform.gateway_pod_labels)},
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": platform.gateway_port}],
                    }
                ],
            },
        ),
    ]
    cidrs = egress_cidrs(spec)
    if cidrs:
        policies.append(
            _network_policy(
                NP_ALLOW_EGRESS,
                tenant,
                uid,
                {
                    "podSelector": every_pod,
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]}],
                },
            )
        )
    return policies


def build_service_account(tenant: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": Kind.SERVICE_ACCOUNT.value,
        "metadata": _meta(TOOL_SERVICE_ACCOUNT, tenant, uid),
        "automountServiceAccountToken": False,
    }


CLUSTER_ROLE_OF: Final[Mapping[MemberRole, str]] = {
    MemberRole.VIEWER: "sba-agentic:tenant-viewer",
    MemberRole.MEMBER: "sba-agentic:tenant-member",
    MemberRole.APPROVER: "sba-agentic:tenant-approver",
    MemberRole.TENANT_ADMIN: "sba-agentic:tenant-admin",
}

_SLUG: Final = re.compile(r"[^a-z0-9]+")


def role_binding_name(member: TenantMember) -> str:
    """Stable per (kind, name), readable, DNS-1123 safe, unique through a short hash."""
    digest = hashlib.sha256(f"{member.kind.value}/{member.name}".encode()).hexdigest()[:10]
    slug = _SLUG.sub("-", member.name.lower()).strip("-")[:30].strip("-")
    kind = member.kind.value.lower()
    return f"{ROLE_BINDING_PREFIX}{kind}-{slug + '-' if slug else ''}{digest}"


def build_role_binding(tenant: str, uid: str, member: TenantMember) -> dict[str, Any]:
    meta = _meta(role_binding_name(member), tenant, uid)
    meta["annotations"] = {f"{group.GROUP}/member": f"{member.kind.value}/{member.name}"}
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": Kind.ROLE_BINDING.value,
        "metadata": meta,
        "roleRef": {
            "apiGroup": RBAC_GROUP,
            "kind": "ClusterRole",
            "name": CLUSTER_ROLE_OF[member.role],
        },
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": member.kind.value, "name": member.name}],
    }


def desired_objects(
    tenant: str, uid: str, spec: TenantSpec, platform: Platform
) -> list[dict[str, Any]]:
    """Every namespaced object the tenant should have, in creation order."""
    return [
        build_resource_quota(tenant, uid, spec),
        build_limit_range(tenant, uid),
        *build_network_policies(tenant, uid, spec, platform),
        build_service_account(tenant, uid),
        *(build_role_binding(tenant, uid, m) for m in spec.members),
    ]


# -- cluster roles ---------------------------------------------------------------------------

_READ: Final = ["get", "list", "watch"]


def _viewer_rules() -> list[dict[str, Any]]:
    return [
        {
            "apiGroups": [group.GROUP],
            "resources": ["agentruns", "approvals", "tools"],
            "verbs": _READ,
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _READ},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": _READ},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": _READ},
    ]


_RUN_WRITE: Final = {
    "apiGroups": [group.GROUP],
    "resources": ["agentruns"],
    "verbs": ["create", "delete", "patch"],
}
_APPROVE: Final = {"apiGroups": [group.GROUP], "resources": ["approvals"], "verbs": ["create"]}
_TOOL_WRITE: Final = {
    "apiGroups": [group.GROUP],
    "resources": ["tools"],
    "verbs": ["create", "update", "patch", "delete"],
}


def cluster_role_rules(role: MemberRole) -> list[dict[str, Any]]:
    """What each tenant role may do in the tenant namespace — never pods/exec or secrets."""
    rules = _viewer_rules()
    if role in (MemberRole.MEMBER, MemberRole.TENANT_ADMIN):
        rules.append(dict(_RUN_WRITE))
    if role in (MemberRole.APPROVER, MemberRole.TENANT_ADMIN):
        rules.append(dict(_APPROVE))
    if role is MemberRole.TENANT_ADMIN:
        rules.append(dict(_TOOL_WRITE))  # the tenant's own tools, in its own namespace
    return rules


def build_cluster_roles() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": name,
                "labels": {
                    group.LABEL_MANAGED_BY: group.MANAGED_BY,
                    group.LABEL_COMPONENT: COMPONENT,
                },
            },
            "rules": cluster_role_rules(role),
        }
        for role, name in CLUSTER_ROLE_OF.items()
    ]


# -- drift -----------------------------------------------------------------------------------

_QUANTITY: Final = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX: Final[Mapping[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity_value(text: Any) -> Decimal | str:
    """A quantity's value (`0.5` == `500m`); anything unparseable compares as itself."""
    raw = str(text)
    match = _QUANTITY.match(raw)
    if match is None or match.group(2) not in _SUFFIX:
        return raw
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return raw


def _quantities(values: Any) -> dict[str, Decimal | str]:
    if not isinstance(values, Mapping):
        return {}
    return {str(k): quantity_value(v) for k, v in values.items()}


def _pruned(value: Any) -> Any:
    """Without empty maps, lists and nulls (the API server drops them)."""
    if isinstance(value, Mapping):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _np_spec(spec: Any) -> Any:
    """A NetworkPolicy spec with the API server's defaults (protocol TCP) made explicit."""
    spec = _pruned(spec or {})
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction, []):
            for port in rule.get("ports", []):
                port.setdefault("protocol", "TCP")
    return spec


def shape(obj: Mapping[str, Any]) -> Any:
    """The part of an object we declare, in a form where equal means equivalent."""
    kind = obj.get("kind")
    if kind == Kind.RESOURCE_QUOTA:
        return _quantities((obj.get("spec") or {}).get("hard"))
    if kind == Kind.LIMIT_RANGE:
        return [
            {
                "type": item.get("type"),
                **{
                    key: _quantities(item.get(key))
                    for key in ("default", "defaultRequest", "max", "min", "maxLimitRequestRatio")
                    if item.get(key)
                },
            }
            for item in (obj.get("spec") or {}).get("limits") or []
        ]
    if kind == Kind.NETWORK_POLICY:
        return _np_spec(obj.get("spec"))
    if kind == Kind.SERVICE_ACCOUNT:
        return {"automountServiceAccountToken": obj.get("automountServiceAccountToken")}
    if kind == Kind.ROLE_BINDING:
        return {"roleRef": obj.get("roleRef"), "subjects": obj.get("subjects") or []}
    if kind == "ClusterRole":
        return _pruned({"rules": obj.get("rules") or []})
    return _pruned(obj.get("spec"))


def _labels_and_owner_ok(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    want = desired.get("metadata") or {}
    have = actual.get("metadata") or {}
    labels = have.get("labels") or {}
    if any(labels.get(k) != v for k, v in (want.get("labels") or {}).items()):
        return False
    owners = {o.get("uid") for o in have.get("ownerReferences") or []}
    return all(o.get("uid") in owners for o in want.get("ownerReferences") or [])


class Action(StrEnum):
    NONE = "none"
    CREATE = "create"
    REPLACE = "replace"
    RECREATE = "recreate"
    """Delete and create: the field that differs is immutable (a RoleBinding's roleRef)."""


def differs(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    return shape(desired) != shape(actual) or not _labels_and_owner_ok(desired, actual)


def plan_object(desired: Mapping[str, Any], actual: Mapping[str, Any] | None) -> Action:
    """What to do to bring `actual` (None: absent) to `desired`."""
    if actual is None or (actual.get("metadata") or {}).get("deletionTimestamp"):
        return Action.CREATE if actual is None else Action.NONE
    if not differs(desired, actual):
        return Action.NONE
    if desired.get("kind") == Kind.ROLE_BINDING and desired.get("roleRef") != actual.get("roleRef"):
        return Action.RECREATE
    return Action.REPLACE


def replacement(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """The desired object as an update of `actual` (its resourceVersion, other labels kept)."""
    have = actual.get("metadata") or {}
    meta = dict(desired.get("metadata") or {})
    meta["resourceVersion"] = have.get("resourceVersion")
    meta["labels"] = {**(have.get("labels") or {}), **(meta.get("labels") or {})}
    return {**desired, "metadata": meta}


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind", "")), str((obj.get("metadata") or {}).get("name", ""))


def stale_objects(
    desired: Sequence[Mapping[str, Any]], actual: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """(kind, name) of labelled objects of ours that the tenant no longer wants."""
    wanted = {object_key(d) for d in desired}
    return sorted(object_key(a) for a in actual if object_key(a) not in wanted)
