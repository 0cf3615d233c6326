"""Tenant provisioning, pure parts: the model, the object builders, drift, status, admission."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from sba_core import group
from sba_core.models.run import AgentRunSpec
from sba_core.models.tenant import MemberRole, ProvisionedObject, TenantMember, TenantSpec
from sba_core.planning import PlanningError
from sba_operator.reconcile.admission import (
    TENANT_NOT_FOUND,
    TENANT_NOT_READY,
    TENANT_SUSPENDED,
    TOOL_NOT_ALLOWED,
    admit_run,
    planned_tools,
    tenant_view,
)
from sba_operator.reconcile.model import TenantView
from sba_operator.reconcile.tenant_objects import (
    CLUSTER_ROLE_OF,
    TOOL_SERVICE_ACCOUNT,
    Action,
    Platform,
    build_cluster_roles,
    build_network_policies,
    build_resource_quota,
    build_role_binding,
    cluster_role_rules,
    desired_objects,
    differs,
    egress_cidrs,
    gateway_port,
    plan_object,
    quantity_value,
    replacement,
    role_binding_name,
    stale_objects,
)
from sba_operator.reconcile.tenants import (
    Outcome,
    decide_namespace,
    namespace_patch,
    tenant_status,
)
from sba_operator.settings import Settings, SettingsError, parse_labels

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
UID = "t-uid"
PLATFORM = Platform("sba-system", {"app.kubernetes.io/name": "sba-agentic-api"}, 8080)


def spec(**fields: Any) -> TenantSpec:
    return TenantSpec.model_validate({"displayName": "Acme", **fields})


def tenant_obj(status: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": group.API_VERSION,
        "kind": "Tenant",
        "metadata": {"name": "acme", "uid": UID, "generation": 1},
        "spec": {"displayName": "Acme", **fields},
    }
    if status is not None:
        obj["status"] = status
    return obj


def by_name(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs}


# -- the model --------------------------------------------------------------------------------


def test_spec_defaults_and_wire_names() -> None:
    s = spec()
    assert s.quotas.compute.pods == 20
    assert s.quotas.compute.cpu == "4"
    wire = s.wire()
    assert wire["quotas"]["compute"]["ephemeralStorage"] == "10Gi"
    assert wire["egressAllowlist"] == []
    assert wire["members"] == []


def test_egress_allowlist_accepts_hosts_wildcards_and_cidrs_and_normalises() -> None:
    s = spec(egressAllowlist=["API.example.com", "*.example.org", "203.0.113.7/24", "::1"])
    assert s.egress_allowlist == ["api.example.com", "*.example.org", "203.0.113.0/24", "::1"]
    with pytest.raises(ValidationError):
        spec(egressAllowlist=["not a host"])
    with pytest.raises(ValidationError):
        spec(egressAllowlist=["foo.*.com"])


def test_members_are_unique_and_roles_are_the_tenant_roles() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        spec(members=[{"name": "alice", "role": "member"}, {"name": "alice"}])
    with pytest.raises(ValidationError):
        spec(members=[{"name": "alice", "role": "platform-admin"}])
    s = spec(members=[{"name": "alice"}, {"kind": "Group", "name": "alice"}])
    assert [m.role for m in s.members] == [MemberRole.VIEWER, MemberRole.VIEWER]


def test_quantities_are_checked() -> None:
    with pytest.raises(ValidationError):
        spec(quotas={"compute": {"cpu": "lots"}})
    assert spec(quotas={"compute": {"cpu": "1500m"}}).quotas.compute.cpu == "1500m"


# -- builders ---------------------------------------------------------------------------------


def test_every_object_is_labelled_and_owned_by_the_tenant() -> None:
    objs = desired_objects("acme", UID, spec(members=[{"name": "alice"}]), PLATFORM)
    kinds = sorted({o["kind"] for o in objs})
    assert kinds == [
        "LimitRange",
        "NetworkPolicy",
        "ResourceQuota",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in objs:
        meta = obj["metadata"]
        assert meta["namespace"] == "tenant-acme"
        assert meta["labels"][group.LABEL_MANAGED_BY] == "sba-agentic"
        assert meta["labels"][group.LABEL_TENANT] == "acme"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": group.API_VERSION,
                "kind": "Tenant",
                "name": "acme",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_resource_quota_and_limit_range() -> None:
    s = spec(quotas={"compute": {"pods": 7, "cpu": "2", "memory": "3Gi", "jobs": 9}})
    hard = build_resource_quota("acme", UID, s)["spec"]["hard"]
    assert hard == {
        "pods": "7",
        "requests.cpu": "2",
        "limits.cpu": "2",
        "requests.memory": "3Gi",
        "limits.memory": "3Gi",
        "requests.ephemeral-storage": "10Gi",
        "limits.ephemeral-storage": "10Gi",
        "count/jobs.batch": "9",
    }
    objs = by_name(desired_objects("acme", UID, s, PLATFORM))
    (limits,) = objs["sba-tenant-limits"]["spec"]["limits"]
    assert limits["type"] == "Container"
    assert (
        set(limits["default"])
        == set(limits["defaultRequest"])
        == {
            "cpu",
            "memory",
            "ephemeral-storage",
        }
    )


def test_network_policies_deny_by_default_and_open_dns_gateway_and_cidrs() -> None:
    s = spec(egressAllowlist=["api.example.com", "203.0.113.0/24", "198.51.100.9"])
    assert egress_cidrs(s) == ["198.51.100.9/32", "203.0.113.0/24"]
    nps = by_name(build_network_policies("acme", UID, s, PLATFORM))
    deny = nps["sba-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = nps["sba-allow-dns"]["spec"]["egress"][0]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    gw = nps["sba-allow-gateway"]["spec"]["egress"][0]
    assert gw["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "sba-system"
    }
    assert gw["to"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sba-agentic-api"
    }
    assert gw["ports"] == [{"protocol": "TCP", "port": 8080}]
    cidr = nps["sba-allow-egress-allowlist"]["spec"]["egress"][0]["to"]
    assert cidr == [
        {"ipBlock": {"cidr": "198.51.100.9/32"}},
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
    ]
    # Host names alone open nothing at the network layer.
    only_hosts = build_network_policies("acme", UID, spec(egressAllowlist=["x.io"]), PLATFORM)
    assert "sba-allow-egress-allowlist" not in by_name(only_hosts)


def test_gateway_port_from_url() -> None:
    assert gateway_port("http://sba-api.sba-system.svc:8080") == 8080
    assert gateway_port("https://gw.example.com") == 443
    assert gateway_port("http://gw") == 80


def test_tool_service_account_mounts_no_token() -> None:
    objs = by_name(desired_objects("acme", UID, spec(), PLATFORM))
    sa = objs[TOOL_SERVICE_ACCOUNT]
    assert sa["kind"] == "ServiceAccount"
    assert sa["automountServiceAccountToken"] is False


def test_role_bindings_bind_each_member_to_the_role_of_their_role() -> None:
    alice = TenantMember.model_validate({"name": "alice@example.com", "role": "member"})
    ops = TenantMember.model_validate({"kind": "Group", "name": "ops", "role": "tenant-admin"})
    rb = build_role_binding("acme", UID, alice)
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "sba-agentic:tenant-member",
    }
    assert rb["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}
    ]
    assert build_role_binding("acme", UID, ops)["roleRef"]["name"] == "sba-agentic:tenant-admin"
    name = role_binding_name(alice)
    assert name.startswith("sba-member-user-alice-example-com-")
    assert len(name) <= 63
    # The same name as a group is another binding.
    group_alice = TenantMember.model_validate({"kind": "Group", "name": "alice@example.com"})
    assert role_binding_name(group_alice) != name


def test_cluster_roles_never_grant_exec_or_secrets() -> None:
    roles = {r["metadata"]["name"]: r for r in build_cluster_roles()}
    assert set(roles) == set(CLUSTER_ROLE_OF.values())

    def allows(role: MemberRole, api_group: str, resource: str, verb: str) -> bool:
        return any(
            api_group in rule["apiGroups"]
            and resource in rule["resources"]
            and verb in rule["verbs"]
            for rule in cluster_role_rules(role)
        )

    for role in MemberRole:
        assert allows(role, group.GROUP, "agentruns", "list")
        assert allows(role, "batch", "jobs", "watch")
        assert allows(role, "", "events", "get")
        assert not allows(role, "", "secrets", "get")
        assert not allows(role, "", "pods/exec", "create")
        assert not allows(role, "", "pods", "create")
    assert not allows(MemberRole.VIEWER, group.GROUP, "agentruns", "create")
    assert allows(MemberRole.MEMBER, group.GROUP, "agentruns", "create")
    assert allows(MemberRole.MEMBER, group.GROUP, "agentruns", "delete")
    assert not allows(MemberRole.MEMBER, group.GROUP, "approvals", "create")
    assert allows(MemberRole.APPROVER, group.GROUP, "approvals", "create")
    assert not allows(MemberRole.APPROVER, group.GROUP, "agentruns", "create")
    assert allows(MemberRole.TENANT_ADMIN, group.GROUP, "approvals", "create")
    assert allows(MemberRole.TENANT_ADMIN, group.GROUP, "agentruns", "patch")


# -- drift ------------------------------------------------------------------------------------


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """How the API server hands an object back: extra metadata, defaults, normalisation."""
    out = copy.deepcopy(obj)
    out["metadata"].update(resourceVersion="42", uid="x", creationTimestamp="2025-01-01T00:00:00Z")
    out["metadata"]["labels"]["extra"] = "kept"
    return out


def test_stored_objects_equal_the_desired_ones() -> None:
    objs = desired_objects(
        "acme", UID, spec(members=[{"name": "a"}], egressAllowlist=["10.0.0.0/8"]), PLATFORM
    )
    for obj in objs:
        assert not differs(obj, as_stored(obj)), obj["metadata"]["name"]
        assert plan_object(obj, as_stored(obj)) is Action.NONE
        assert plan_object(obj, None) is Action.CREATE


def test_quantities_compare_by_value() -> None:
    assert quantity_value("0.5") == quantity_value("500m")
    assert quantity_value("1Gi") == quantity_value("1024Mi")
    assert quantity_value("1G") != quantity_value("1Gi")
    quota = build_resource_quota("acme", UID, spec(quotas={"compute": {"cpu": "0.5"}}))
    stored = as_stored(quota)
    stored["spec"]["hard"]["requests.cpu"] = "500m"
    stored["spec"]["hard"]["limits.cpu"] = "500m"
    assert not differs(quota, stored)
    stored["spec"]["hard"]["pods"] = "1000"
    assert plan_object(quota, stored) is Action.REPLACE


def test_edited_network_policy_is_replaced_keeping_its_version() -> None:
    deny = by_name(build_network_policies("acme", UID, spec(), PLATFORM))["sba-default-deny"]
    edited = as_stored(deny)
    edited["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
    assert plan_object(deny, edited) is Action.REPLACE
    body = replacement(deny, edited)
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["metadata"]["labels"]["extra"] == "kept"
    assert "ingress" not in body["spec"]
    # Our labels or owner stripped is drift too.
    unlabelled = as_stored(deny)
    del unlabelled["metadata"]["labels"][group.LABEL_TENANT]
    assert differs(deny, unlabelled)
    orphaned = as_stored(deny)
    orphaned["metadata"]["ownerReferences"] = []
    assert differs(deny, orphaned)


def test_changed_role_is_a_recreate_and_removed_members_are_stale() -> None:
    alice = TenantMember.model_validate({"name": "alice", "role": "viewer"})
    old = as_stored(build_role_binding("acme", UID, alice))
    promoted = build_role_binding("acme", UID, alice.model_copy(update={"role": MemberRole.MEMBER}))
    assert plan_object(promoted, old) is Action.RECREATE
    desired = desired_objects("acme", UID, spec(), PLATFORM)
    assert stale_objects(desired, [*desired, old]) == [("RoleBinding", old["metadata"]["name"])]


# -- namespace and status ---------------------------------------------------------------------


def test_tenant_gets_a_restricted_namespace() -> None:
    d = decide_namespace(tenant_obj(), None)
    assert d.create_namespace is not None
    meta = d.create_namespace["metadata"]
    assert meta["name"] == "tenant-acme"
    assert meta["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert meta["labels"][group.LABEL_TENANT] == "acme"
    assert meta["ownerReferences"][0]["uid"] == UID
    again = decide_namespace(tenant_obj(), d.create_namespace)
    assert again.create_namespace is None
    assert again.namespace_patch is None


def test_foreign_namespace_is_labelled_but_not_adopted() -> None:
    patch = namespace_patch("acme", UID, {"metadata": {"name": "tenant-acme"}})
    assert patch is not None
    assert "ownerReferences" not in patch["metadata"]
    assert patch["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_invalid_spec_fails_the_tenant() -> None:
    d = decide_namespace(tenant_obj(quotas={"compute": {"cpu": "lots"}}), None)
    assert d.spec is None
    assert d.problems
    status, changed = tenant_status(tenant_obj(), Outcome(problems=d.problems), T0)
    assert changed
    assert status.phase == "failed"
    assert status.conditions[0].reason == "InvalidSpec"


def test_status_is_ready_only_when_provisioned_and_a_fixpoint() -> None:
    waiting, _ = tenant_status(tenant_obj(), Outcome(waiting_for="quota"), T0)
    assert waiting.phase == "pending"
    assert (waiting.conditions[0].status, waiting.conditions[0].reason) == ("False", "Provisioning")
    objs = [ProvisionedObject(kind="Namespace", name="tenant-acme")]
    ready, changed = tenant_status(tenant_obj(waiting.wire()), Outcome(objs), T0)
    assert changed
    assert ready.phase == "ready"
    assert ready.conditions[0].status == "True"
    assert ready.provisioned == objs
    assert ready.observed_generation == 1
    _, again = tenant_status(tenant_obj(ready.wire()), Outcome(objs), T0)
    assert not again
    gone, _ = tenant_status(tenant_obj(ready.wire()), Outcome(terminating=True), T0)
    assert gone.phase == "terminating"


# -- admission --------------------------------------------------------------------------------


def run_spec(**fields: Any) -> AgentRunSpec:
    return AgentRunSpec.model_validate({"tenant": "acme", "prompt": "refunds?", **fields})


READY_STATUS = {
    "phase": "ready",
    "conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned", "message": "ok"}],
}


def test_admission_of_runs() -> None:
    tools = ["knowledge.search", "render.document"]
    assert admit_run(run_spec(), tenant_obj(READY_STATUS), tools) is None
    missing = admit_run(run_spec(), None, tools)
    assert missing is not None
    assert missing.reason == TENANT_NOT_FOUND
    assert not missing.waits
    other = admit_run(run_spec(), TenantView(name="other"), tools)
    assert other is not None
    assert other.reason == TENANT_NOT_FOUND
    suspended = admit_run(run_spec(), tenant_obj(READY_STATUS, suspended=True), tools)
    assert suspended is not None
    assert suspended.reason == TENANT_SUSPENDED
    refused = admit_run(
        run_spec(), tenant_obj(READY_STATUS, allowedTools=["knowledge.search"]), tools
    )
    assert refused is not None
    reason, message = refused
    assert reason == TOOL_NOT_ALLOWED
    assert "render.document" in message
    assert "allowed: knowledge.search" in message
    assert not refused.waits


def test_an_explicit_plans_tools_count_even_when_planning_fails() -> None:
    plan = [{"tool": "render.document", "params": {"nonsense": 1}}]
    tenant = tenant_obj(READY_STATUS, allowedTools=["knowledge.search"])
    refusal = admit_run(run_spec(plan=plan), tenant, ())
    assert refusal is not None
    assert refusal.reason == TOOL_NOT_ALLOWED


def test_a_run_of_a_tenant_not_yet_ready_waits() -> None:
    provisioning = {
        "phase": "pending",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Provisioning", "message": "quota"}
        ],
    }
    for tenant in (tenant_obj(), tenant_obj(provisioning)):
        refusal = admit_run(run_spec(), tenant, ["knowledge.search"])
        assert refusal is not None
        assert refusal.reason == TENANT_NOT_READY
        assert refusal.waits
    deleting = tenant_obj(READY_STATUS)
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    view = tenant_view(deleting)
    assert view is not None
    assert not view.ready


def test_tenant_view_carries_what_runs_need() -> None:
    view = tenant_view(
        tenant_obj(READY_STATUS, allowedTools=["knowledge.search"], quotas={"maxConcurrentRuns": 3})
    )
    assert view is not None
    assert view.ready
    assert view.allowed_tools == ("knowledge.search",)
    assert view.max_concurrent_runs == 3
    assert tenant_view(None) is None


def test_planned_tools_tolerates_planning_errors() -> None:
    def broken() -> Any:
        raise PlanningError("nope")

    assert planned_tools(broken) == ()


# -- settings ---------------------------------------------------------------------------------


def test_gateway_settings_from_env() -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "SBA_STEP_TOKEN_SECRET": "k"}
    s = Settings.from_env(base)
    assert s.tenants.gateway_namespace == "sba-system"
    assert dict(s.tenants.gateway_pod_labels) == {"app.kubernetes.io/name": "sba-agentic-api"}
    s = Settings.from_env(
        {**base, "SBA_GATEWAY_NAMESPACE": "gw", "SBA_GATEWAY_POD_LABELS": "a=b, c=d"}
    )
    assert s.tenants.gateway_namespace == "gw"
    assert dict(s.tenants.gateway_pod_labels) == {"a": "b", "c": "d"}
    assert parse_labels("") == {}
    with pytest.raises(SettingsError):
        parse_labels("novalue")
