"""Tenant provisioning against the real control plane, Postgres and Redis.

A real `sba-agentic operator` child process, watching only `tenant-tpv-*`
namespaces (Tenants are cluster-scoped, so every tenant here has a unique
`tpv-` name). Checks every provisioned object, RBAC through `kubectl auth
can-i`, drift correction, member removal, admission of runs and orderly deletion.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sba_devstack.procs import free_port, log_tail
from sba_devstack.services import Service
from sba_store.audit import AuditRepository
from sba_store.db import Pool
from sba_store.tenants import TenantRepository
from tests.fixtures.controlplane import Kubectl
from tests.fixtures.stack import wait_for

pytestmark = pytest.mark.integration

PREFIX = "tpv"


def unique(name: str) -> str:
    return f"{PREFIX}-{name}-{secrets.token_hex(2)}"


def apply(kubectl: Kubectl, manifest: dict[str, Any]) -> None:
    done = kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert done.returncode == 0, done.stderr


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any] | None:
    done = kubectl("get", *args, "-o", "json")
    if done.returncode != 0:
        return None
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def tenant_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"displayName": f"Tenant tests ({name})", **spec},
    }


def run_manifest(name: str, tenant: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": f"tenant-{tenant}"},
        "spec": {"tenant": tenant, "prompt": "What is the refund policy?", **spec},
    }


def can_i(
    kubectl: Kubectl, user: str, namespace: str, *what: str, groups: tuple[str, ...] = ()
) -> bool:
    args = ["auth", "can-i", "--as", user, *(f"--as-group={g}" for g in groups), "-n", namespace]
    done = kubectl(*args, *what)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), (done.stdout, done.stderr)
    return answer == "yes"


@pytest.fixture(scope="module")
def operator(
    crds_installed: None,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    env = {
        "KUBECONFIG": str(kubeconfig),
        "DATABASE_URL": app_dsn,
        "REDIS_URL": redis_url,
        "SBA_GATEWAY_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: no tool runs
        "SBA_STEP_TOKEN_SECRET": secrets.token_urlsafe(48),
        # Kopf watches cluster-scoped Tenants only while some watched namespace exists:
        # `default` always does, the glob covers the namespaces these tenants get.
        "SBA_WATCH_NAMESPACES": f"default,tenant-{PREFIX}-*",
        "SBA_LOG_LEVEL": "INFO",
    }
    log = tmp_path_factory.mktemp("tenants") / "operator.log"
    service = Service("operator", env, log).start()
    try:
        yield service
    finally:
        service.stop()
        print(f"operator log: {log}")


def wait(operator: Service, check: Any, what: str, timeout: float = 60.0) -> Any:
    def guarded() -> Any:
        assert operator.running, f"operator died:\n{log_tail(operator.log_path)}"
        return check()

    try:
        return wait_for(guarded, timeout=timeout, what=what)
    except AssertionError:
        print(log_tail(operator.log_path, 80))
        raise


def wait_ready(kubectl: Kubectl, operator: Service, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get_json(kubectl, "tenant", name) or {}
        return obj if (obj.get("status") or {}).get("phase") == "ready" else None

    result: dict[str, Any] = wait(operator, ready, f"tenant {name} ready")
    return result


def wait_run(kubectl: Kubectl, operator: Service, tenant: str, run: str, phases: set[str]) -> Any:
    def check() -> dict[str, Any] | None:
        obj = get_json(kubectl, "agentrun", run, "-n", f"tenant-{tenant}") or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get("phase") in phases else None

    return wait(operator, check, f"run {run} in {phases}")


MEMBERS = [
    {"kind": "User", "name": "alice", "role": "member"},
    {"kind": "Group", "name": "auditors", "role": "viewer"},
    {"kind": "User", "name": "carol", "role": "approver"},
]


@pytest.fixture(scope="module")
def acme(operator: Service, kubectl: Kubectl) -> str:
    name = unique("acme")
    apply(
        kubectl,
        tenant_manifest(
            name,
            members=MEMBERS,
            egressAllowlist=["api.example.com", "203.0.113.0/24"],
            quotas={"compute": {"pods": 7, "cpu": "3", "memory": "5Gi"}},
        ),
    )
    wait_ready(kubectl, operator, name)
    return name


@pytest.fixture(scope="module")
def other(operator: Service, kubectl: Kubectl) -> str:
    name = unique("other")
    apply(kubectl, tenant_manifest(name, members=[{"name": "dave", "role": "member"}]))
    wait_ready(kubectl, operator, name)
    return name


def objects(kubectl: Kubectl, kind: str, namespace: str) -> dict[str, dict[str, Any]]:
    listed = get_json(
        kubectl, kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=sba-agentic"
    )
    assert listed is not None
    return {o["metadata"]["name"]: o for o in listed["items"]}


async def test_provisioning_creates_every_object(
    acme: str, kubectl: Kubectl, pg_pool: Pool
) -> None:
    ns = f"tenant-{acme}"
    tenant = get_json(kubectl, "tenant", acme)
    assert tenant is not None
    uid = tenant["metadata"]["uid"]
    status = tenant["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Provisioned")
    assert status["observedGeneration"] == tenant["metadata"]["generation"]

    namespace = get_json(kubectl, "namespace", ns)
    assert namespace is not None
    for mode in ("enforce", "warn", "audit"):
        assert namespace["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"

    quota = objects(kubectl, "resourcequota", ns)["sba-tenant-quota"]
    hard = quota["spec"]["hard"]
    assert hard["pods"] == "7"
    assert hard["requests.cpu"] == hard["limits.cpu"] == "3"
    assert hard["limits.memory"] == "5Gi"
    assert hard["count/jobs.batch"] == "200"
    assert "limits.ephemeral-storage" in hard
    assert quota["status"]["hard"]  # counted by the quota controller before Ready

    (limit,) = objects(kubectl, "limitrange", ns)["sba-tenant-limits"]["spec"]["limits"]
    assert limit["type"] == "Container"
    assert limit["defaultRequest"]["cpu"] == "50m"
    assert limit["default"]["memory"] == "256Mi"

    nps = objects(kubectl, "networkpolicy", ns)
    assert set(nps) == {
        "sba-default-deny",
        "sba-allow-dns",
        "sba-allow-gateway",
        "sba-allow-egress-allowlist",
    }
    assert nps["sba-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in nps["sba-default-deny"]["spec"]
    assert nps["sba-allow-egress-allowlist"]["spec"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "203.0.113.0/24"}}
    ]
    gateway = nps["sba-allow-gateway"]["spec"]["egress"][0]
    assert gateway["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "sba-system"
    }

    sa = objects(kubectl, "serviceaccount", ns)["sba-tool-runner"]
    assert sa["automountServiceAccountToken"] is False

    bindings = objects(kubectl, "rolebinding", ns)
    by_subject = {
        (b["subjects"][0]["kind"], b["subjects"][0]["name"]): b for b in bindings.values()
    }
    assert set(by_subject) == {("User", "alice"), ("Group", "auditors"), ("User", "carol")}
    assert by_subject["User", "alice"]["roleRef"]["name"] == "sba-agentic:tenant-member"
    assert by_subject["Group", "auditors"]["roleRef"]["name"] == "sba-agentic:tenant-viewer"
    assert by_subject["User", "carol"]["roleRef"]["name"] == "sba-agentic:tenant-approver"

    for obj in [quota, sa, *nps.values(), *bindings.values()]:
        meta = obj["metadata"]
        assert meta["labels"]["sba-agentic.io/tenant"] == acme
        assert meta["ownerReferences"][0]["uid"] == uid

    for role in ("viewer", "member", "approver", "admin"):
        assert get_json(kubectl, "clusterrole", f"sba-agentic:tenant-{role}") is not None

    provisioned = {(p["kind"], p["name"]) for p in status["provisioned"]}
    assert ("Namespace", ns) in provisioned
    assert ("ResourceQuota", "sba-tenant-quota") in provisioned
    assert ("ServiceAccount", "sba-tool-runner") in provisioned
    assert len([k for k, _ in provisioned if k == "RoleBinding"]) == 3

    record = await TenantRepository(pg_pool).get(acme)
    assert record is not None
    assert record.display_name == f"Tenant tests ({acme})"


def test_members_get_exactly_their_role(acme: str, other: str, kubectl: Kubectl) -> None:
    ns, elsewhere = f"tenant-{acme}", f"tenant-{other}"
    assert can_i(kubectl, "alice", ns, "create", "agentruns.sba-agentic.io")
    assert can_i(kubectl, "alice", ns, "list", "jobs.batch")
    assert not can_i(kubectl, "alice", elsewhere, "create", "agentruns.sba-agentic.io")
    assert not can_i(kubectl, "alice", elsewhere, "get", "agentruns.sba-agentic.io")
    assert not can_i(kubectl, "alice", ns, "create", "pods")
    assert not can_i(kubectl, "alice", ns, "get", "secrets")
    assert not can_i(kubectl, "alice", ns, "create", "pods", "--subresource=exec")
    assert not can_i(kubectl, "alice", ns, "create", "approvals.sba-agentic.io")
    # A group member: read only.
    assert can_i(kubectl, "bob", ns, "watch", "agentruns.sba-agentic.io", groups=("auditors",))
    assert not can_i(kubectl, "bob", ns, "create", "agentruns.sba-agentic.io", groups=("auditors",))
    assert not can_i(kubectl, "bob", ns, "list", "agentruns.sba-agentic.io")
    # An approver approves but does not start runs.
    assert can_i(kubectl, "carol", ns, "create", "approvals.sba-agentic.io")
    assert not can_i(kubectl, "carol", ns, "create", "agentruns.sba-agentic.io")


def test_a_deleted_quota_comes_back(acme: str, kubectl: Kubectl, operator: Service) -> None:
    ns = f"tenant-{acme}"
    before = objects(kubectl, "resourcequota", ns)["sba-tenant-quota"]["metadata"]["uid"]
    done = kubectl("delete", "resourcequota", "sba-tenant-quota", "-n", ns)
    assert done.returncode == 0, done.stderr

    def back() -> bool:
        quota = objects(kubectl, "resourcequota", ns).get("sba-tenant-quota")
        return quota is not None and quota["metadata"]["uid"] != before

    wait(operator, back, "the ResourceQuota re-created")


def test_an_edited_network_policy_is_restored(
    acme: str, kubectl: Kubectl, operator: Service
) -> None:
    ns = f"tenant-{acme}"
    patch = {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}
    done = kubectl(
        "patch",
        "networkpolicy",
        "sba-default-deny",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    assert done.returncode == 0, done.stderr

    def restored() -> bool:
        spec = objects(kubectl, "networkpolicy", ns)["sba-default-deny"]["spec"]
        return "ingress" not in spec and spec["policyTypes"] == ["Ingress", "Egress"]

    wait(operator, restored, "the default-deny NetworkPolicy restored")


def test_removing_a_member_removes_their_binding(
    acme: str, kubectl: Kubectl, operator: Service
) -> None:
    ns = f"tenant-{acme}"
    remaining = [m for m in MEMBERS if m["name"] != "alice"]
    done = kubectl(
        "patch", "tenant", acme, "--type=merge", "-p", json.dumps({"spec": {"members": remaining}})
    )
    assert done.returncode == 0, done.stderr

    def gone() -> bool:
        subjects = {b["subjects"][0]["name"] for b in objects(kubectl, "rolebinding", ns).values()}
        return subjects == {"auditors", "carol"}

    wait(operator, gone, "alice's RoleBinding removed")
    assert not can_i(kubectl, "alice", ns, "create", "agentruns.sba-agentic.io")


def test_a_run_of_a_suspended_tenant_fails(operator: Service, kubectl: Kubectl) -> None:
    name = unique("susp")
    apply(kubectl, tenant_manifest(name, suspended=True))
    wait_ready(kubectl, operator, name)
    apply(kubectl, run_manifest("refused", name))
    status = wait_run(kubectl, operator, name, "refused", {"failed"})
    assert status["reason"] == "TenantSuspended"
    assert name in status["message"]


def test_a_run_with_a_disallowed_tool_fails(operator: Service, kubectl: Kubectl) -> None:
    name = unique("tools")
    apply(kubectl, tenant_manifest(name, allowedTools=["knowledge.search"]))
    wait_ready(kubectl, operator, name)
    plan = [
        {"id": "find", "tool": "knowledge.search", "params": {"query": "refunds"}},
        {"id": "write", "tool": "render.document", "params": {"title": "Refunds"}},
    ]
    apply(kubectl, run_manifest("too-much", name, plan=plan))
    status = wait_run(kubectl, operator, name, "too-much", {"failed"})
    assert status["reason"] == "ToolNotAllowed"
    assert "render.document" in status["message"]
    assert "allowed: knowledge.search" in status["message"]
    jobs = get_json(kubectl, "jobs", "-n", f"tenant-{name}")
    assert jobs is not None
    assert jobs["items"] == []


async def test_deletion_is_orderly(operator: Service, kubectl: Kubectl, pg_pool: Pool) -> None:
    name = unique("bye")
    ns = f"tenant-{name}"
    apply(kubectl, tenant_manifest(name, members=[{"name": "erin", "role": "member"}]))
    tenant = wait_ready(kubectl, operator, name)
    apply(
        kubectl,
        run_manifest(
            "leftover", name, plan=[{"tool": "knowledge.search", "params": {"query": "q"}}]
        ),
    )
    wait_run(kubectl, operator, name, "leftover", {"executing", "failed"})
    done = kubectl("delete", "tenant", name, "--wait=false")
    assert done.returncode == 0, done.stderr

    wait(operator, lambda: get_json(kubectl, "tenant", name) is None, "the Tenant gone", 120)
    assert get_json(kubectl, "agentruns", "leftover", "-n", ns) is None
    assert not can_i(kubectl, "erin", ns, "create", "agentruns.sba-agentic.io")
    wait(operator, lambda: get_json(kubectl, "namespace", ns) is None, "the namespace gone", 120)

    entries = await AuditRepository(pg_pool).list_for_tenant(name)
    deleted = [e for e in entries if e.action == "tenant.deleted"]
    assert len(deleted) == 1
    assert deleted[0].actor == "operator"
    assert (deleted[0].payload or {})["uid"] == tenant["metadata"]["uid"]
    assert (deleted[0].payload or {})["namespaceDeleted"] is True
    # The tenant's row stays: past runs and the audit log refer to it.
    assert await TenantRepository(pg_pool).get(name) is not None


def test_a_namespace_that_existed_before_is_kept(operator: Service, kubectl: Kubectl) -> None:
    name = unique("byo")
    ns = f"tenant-{name}"
    apply(kubectl, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    apply(kubectl, tenant_manifest(name))
    wait_ready(kubectl, operator, name)
    assert "sba-tenant-quota" in objects(kubectl, "resourcequota", ns)
    done = kubectl("delete", "tenant", name, "--wait=false")
    assert done.returncode == 0, done.stderr
    wait(operator, lambda: get_json(kubectl, "tenant", name) is None, "the Tenant gone", 120)
    namespace = get_json(kubectl, "namespace", ns)
    assert namespace is not None
    assert not namespace["metadata"].get("deletionTimestamp")
    assert objects(kubectl, "resourcequota", ns) == {}
    kubectl("delete", "namespace", ns, "--wait=false")


def test_a_run_created_before_its_tenant_is_ready_waits_then_starts(
    operator: Service, kubectl: Kubectl
) -> None:
    """Tenant and run applied together (as one GitOps sync would) while the operator is down."""
    name = unique("early")
    ns = f"tenant-{name}"
    operator.kill()
    try:
        apply(kubectl, tenant_manifest(name))
        labels = {"sba-agentic.io/tenant": name, "app.kubernetes.io/managed-by": "sba-agentic"}
        apply(
            kubectl,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
        )
        plan = [{"tool": "knowledge.search", "params": {"query": "refunds"}}]
        apply(kubectl, run_manifest("early-bird", name, plan=plan))
    finally:
        operator.start()
    status = wait_run(kubectl, operator, name, "early-bird", {"planning", "executing", "failed"})
    assert status.get("reason") not in ("TenantNotFound", "TenantNotReady"), status
    assert status["phase"] != "failed" or status["reason"] == "StepFailed", status
