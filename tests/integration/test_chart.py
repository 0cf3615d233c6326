"""The Helm chart (charts/sba-agentic) against the real local control plane.

`helm lint`, `helm template`, a server-side dry run of every rendered object, then the
RBAC and admission objects applied for real under a unique release name: `kubectl auth
can-i` as each ServiceAccount, and the admission policies admitting or refusing real
requests. helm is built from its Go module once (`make helm-path`, cached).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sba_operator.reconcile.tenant_objects import build_cluster_roles
from tests.fixtures.controlplane import REPO_ROOT, Kubectl
from tests.fixtures.stack import wait_for

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "sba-agentic"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> Path:
    """The helm binary; skipped (with the build's output) only when it cannot be built."""
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "helm-path"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"could not build helm with `make helm-path`: {done.stderr[-1500:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def run_helm(helm: Path, *args: str) -> str:
    done = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def render_text(helm: Path, release: str, namespace: str, *sets: str) -> str:
    flags = [arg for s in sets for arg in ("--set", s)]
    return run_helm(
        helm, "template", release, str(CHART), "--namespace", namespace, "--include-crds", *flags
    )


class StrictLoader(yaml.SafeLoader):
    """A duplicate key is an error (Helm's output would otherwise lose a value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
        assert not duplicates, f"duplicate keys {duplicates} at {node.start_mark}"
        return super().construct_mapping(node, deep=deep)


def render(helm: Path, release: str, namespace: str, *sets: str) -> list[Doc]:
    text = render_text(helm, release, namespace, *sets)
    return [d for d in yaml.load_all(text, Loader=StrictLoader) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, suffix: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- without a cluster -----------------------------------------------------------------------


def test_chart_crds_are_the_repositorys() -> None:
    """crds/ is the one source: `make chart-sync` copies it; a stale copy fails here."""
    for source in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        folder = "files/admission" if source.name.startswith("admission-") else "crds"
        copy = CHART / folder / source.name
        assert copy.exists(), f"{copy} missing: run `make chart-sync`"
        assert copy.read_text() == source.read_text(), f"{copy} is stale: run `make chart-sync`"
    ours = {p.name for p in (REPO_ROOT / "crds").glob("*.yaml")} | {"kopf-peerings.yaml"}
    extra = {p.name for p in (CHART / "crds").glob("*.yaml")} - ours
    extra |= {p.name for p in (CHART / "files" / "admission").glob("*.yaml")} - ours
    assert not extra, f"chart files no longer in crds/: {sorted(extra)}"


def test_lint(helm: Path) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


def test_rendered_workloads_are_locked_down(helm: Path) -> None:
    docs = render(helm, "sba", "sba-system")
    workloads = {
        d["metadata"]["name"]: d for d in of_kind(docs, "Deployment") + of_kind(docs, "Job")
    }
    assert set(workloads) == {
        "sba-sba-agentic-api",
        "sba-sba-agentic-operator",
        "sba-sba-agentic-migrations",
    }
    for name, obj in workloads.items():
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 65532, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"]["memory"], name

    api = named(docs, "Deployment", "-api")["spec"]["template"]
    container = api["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == 8080

    operator = named(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 2
    op_container = operator["spec"]["template"]["spec"]["containers"][0]
    assert op_container["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert op_container["ports"][0]["containerPort"] == 9090

    migrations = named(docs, "Job", "-migrations")
    assert "pre-install" in migrations["metadata"]["annotations"]["helm.sh/hook"]
    assert migrations["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]

    # The operator's tenant NetworkPolicies must select the API's pods.
    config = named(docs, "ConfigMap", "-operator")["data"]
    wanted = dict(pair.split("=", 1) for pair in config["SBA_GATEWAY_POD_LABELS"].split(","))
    assert wanted.items() <= api["metadata"]["labels"].items()
    assert config["SBA_GATEWAY_NAMESPACE"] == "sba-system"
    assert config["SBA_GATEWAY_URL"] == "http://sba-sba-agentic-api.sba-system.svc:8080"
    peering = of_kind(docs, "ClusterKopfPeering")[0]["metadata"]["name"]
    assert config["SBA_OPERATOR_PEERING"] == peering

    hpa = of_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert {
        d["spec"].get("minAvailable", d["spec"].get("maxUnavailable"))
        for d in of_kind(docs, "PodDisruptionBudget")
    } == {1}


def test_admission_delegation_adds_only_the_api_identity(helm: Path) -> None:
    docs = render(helm, "sba", "sba-system")
    source = yaml.safe_load((REPO_ROOT / "crds" / "admission-approvals.yaml").read_text())
    policy = next(
        d
        for d in of_kind(docs, "ValidatingAdmissionPolicy")
        if d["metadata"]["name"] == "approvals.sba-agentic.io"
    )
    assert policy["spec"]["validations"] == source["spec"]["validations"]
    (variable,) = policy["spec"]["variables"]
    assert variable["expression"] == (
        f"({source['spec']['variables'][0]['expression']}) || request.userInfo.username in "
        '["system:serviceaccount:sba-system:sba-sba-agentic-api"]'
    )


# -- against the control plane ---------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(kubectl: Kubectl, crds_installed: None) -> Iterator[tuple[str, str, str]]:
    """(release, namespace, tenant namespace), created for real and removed afterwards."""
    suffix = secrets.token_hex(3)
    release, namespace, tenant = f"chart{suffix}", f"chart-{suffix}", f"chart{suffix}"
    tenant_ns = f"tenant-{tenant}"
    ok(kubectl("create", "namespace", namespace))
    ok(kubectl("create", "namespace", tenant_ns))
    ok(
        kubectl(
            "label",
            "namespace",
            tenant_ns,
            f"sba-agentic.io/tenant={tenant}",
            "app.kubernetes.io/managed-by=sba-agentic",
        )
    )
    ok(kubectl("apply", "--server-side", "-f", str(CHART / "crds" / "kopf-peerings.yaml")))
    ok(
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/clusterkopfpeerings.kopf.dev",
            "crd/kopfpeerings.kopf.dev",
        )
    )
    yield release, namespace, tenant_ns
    selector = f"app.kubernetes.io/instance={release}"
    kubectl(
        "delete",
        "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding",
        "-l",
        selector,
        "--wait=false",
    )
    kubectl("delete", "namespace", namespace, tenant_ns, "--wait=false")
    # Put the repository's own admission policies back (ours replaced them).
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        *(
            arg
            for p in sorted((REPO_ROOT / "crds").glob("admission-*.yaml"))
            for arg in ("-f", str(p))
        ),
    )


def as_stream(docs: list[Doc]) -> str:
    return "\n---\n".join(json.dumps(d) for d in docs)


def test_every_object_passes_a_server_side_dry_run(
    helm: Path, kubectl: Kubectl, scratch: tuple[str, str, str]
) -> None:
    release, namespace, _ = scratch
    variants = [
        render_text(helm, release, namespace),
        render_text(
            helm,
            release,
            namespace,
            "api.autoscaling.customMetric.enabled=true",
            "api.networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.ingress=yes",
            "api.networkPolicy.egress[0].ports[0].port=5432",
            f"operator.watchNamespaces={{{namespace},tenant-*}}",
            "admission.delegatingGroups={platform-admins}",
            "secrets.databaseUrl=postgresql://sba_app@db/sba",
        ),
    ]
    for text in variants:
        # Helm's own output (kubectl's YAML decoding refuses duplicate keys), hooks included:
        # the migrations Job and its Secret must be valid objects too.
        done = kubectl("apply", "--dry-run=server", "-f", "-", input=text)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("(server dry run)") == len(
            [d for d in yaml.safe_load_all(text) if d]
        )


def apply_rbac_and_admission(helm: Path, kubectl: Kubectl, release: str, namespace: str) -> None:
    docs = render(helm, release, namespace)
    kinds = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    ok(
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=as_stream([d for d in docs if d["kind"] in kinds]),
        )
    )


@pytest.fixture(scope="module")
def installed(helm: Path, kubectl: Kubectl, scratch: tuple[str, str, str]) -> tuple[str, str, str]:
    release, namespace, _ = scratch
    apply_rbac_and_admission(helm, kubectl, release, namespace)
    return scratch


def can_i(kubectl: Kubectl, who: str, *args: str) -> bool:
    done = kubectl("auth", "can-i", "--as", who, *args)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def identities(release: str, namespace: str) -> tuple[str, str]:
    prefix = f"system:serviceaccount:{namespace}:{release}-sba-agentic"
    return f"{prefix}-operator", f"{prefix}-api"


def test_operator_rbac(kubectl: Kubectl, installed: tuple[str, str, str]) -> None:
    release, namespace, tenant_ns = installed
    operator, _ = identities(release, namespace)
    allowed = [
        ("create", "jobs.batch", "-n", tenant_ns),
        ("patch", "agentruns.sba-agentic.io", "--subresource=status", "-n", tenant_ns),
        ("patch", "approvals.sba-agentic.io", "--subresource=status", "-n", tenant_ns),
        ("update", "tenants.sba-agentic.io", "--subresource=finalizers"),
        ("create", "secrets", "-n", tenant_ns),
        ("delete", "secrets", "-n", tenant_ns),
        ("create", "namespaces"),
        ("create", "networkpolicies.networking.k8s.io", "-n", tenant_ns),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", tenant_ns),
        ("bind", "clusterroles.rbac.authorization.k8s.io/sba-agentic:tenant-member"),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("create", "events", "-n", tenant_ns),
    ]
    refused = [
        ("list", "secrets", "-n", tenant_ns),
        ("watch", "secrets", "--all-namespaces"),
        ("bind", "clusterroles.rbac.authorization.k8s.io/cluster-admin"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ("update", "clusterroles.rbac.authorization.k8s.io/admin"),
        ("create", "pods", "-n", tenant_ns),
        ("create", "pods/exec", "-n", tenant_ns),
        ("create", "deployments.apps", "-n", tenant_ns),
    ]
    assert [a for a in allowed if not can_i(kubectl, operator, *a)] == []
    assert [r for r in refused if can_i(kubectl, operator, *r)] == []


def test_api_rbac(kubectl: Kubectl, installed: tuple[str, str, str]) -> None:
    release, namespace, tenant_ns = installed
    _, api = identities(release, namespace)
    allowed = [
        ("create", "agentruns.sba-agentic.io", "-n", tenant_ns),
        ("patch", "agentruns.sba-agentic.io", "-n", tenant_ns),
        ("create", "approvals.sba-agentic.io", "-n", tenant_ns),
        ("create", "tenants.sba-agentic.io"),
        ("get", "namespaces"),
    ]
    refused = [
        ("create", "jobs.batch", "-n", tenant_ns),
        ("get", "secrets", "-n", tenant_ns),
        ("get", "secrets", "-n", namespace),
        ("delete", "namespaces"),
        ("patch", "agentruns.sba-agentic.io", "--subresource=status", "-n", tenant_ns),
        ("patch", "approvals.sba-agentic.io", "--subresource=status", "-n", tenant_ns),
        ("create", "pods", "-n", tenant_ns),
    ]
    assert [a for a in allowed if not can_i(kubectl, api, *a)] == []
    assert [r for r in refused if can_i(kubectl, api, *r)] == []


def test_operator_can_create_the_tenant_cluster_roles(
    kubectl: Kubectl, installed: tuple[str, str, str]
) -> None:
    """RBAC's escalation check: the operator holds every permission it grants tenants."""
    release, namespace, _ = installed
    operator, _ = identities(release, namespace)
    for role in build_cluster_roles():
        # apply, not create: an operator started by another test may have made them already.
        done = kubectl(
            "apply", "--dry-run=server", "--as", operator, "-f", "-", input=json.dumps(role)
        )
        assert done.returncode == 0, done.stderr


def approval(name: str, namespace: str, approver: str) -> str:
    return json.dumps(
        {
            "apiVersion": "sba-agentic.io/v1alpha1",
            "kind": "Approval",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "run": "r1",
                "stepId": "s1",
                "decision": "approved",
                "approver": approver,
                "digest": "0" * 64,
            },
        }
    )


def test_admission_lets_the_api_delegate_and_keeps_the_operator_in_tenant_namespaces(
    kubectl: Kubectl, installed: tuple[str, str, str]
) -> None:
    release, namespace, tenant_ns = installed
    operator, api = identities(release, namespace)

    def create_as(who: str, manifest: str) -> subprocess.CompletedProcess[str]:
        return kubectl("create", "--dry-run=server", "--as", who, "-f", "-", input=manifest)

    # The API creates an Approval in alice's name; the operator (which may create
    # Approvals, but is no delegate) may not. Policies apply within a second or so.
    def policy_in_force() -> bool:
        return (
            "must be your own user name"
            in create_as(operator, approval("a2", tenant_ns, "alice")).stderr
        )

    wait_for(policy_in_force, timeout=30, what="the approvals policy to refuse the operator")
    ok(create_as(api, approval("a1", tenant_ns, "alice")))

    secret: Doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "step-token"},
        "stringData": {"token": "x"},
    }

    def in_ns(ns: str) -> str:
        return json.dumps({**secret, "metadata": {**secret["metadata"], "namespace": ns}})

    def writes_restricted() -> bool:
        return "only in tenant namespaces" in create_as(operator, in_ns(namespace)).stderr

    wait_for(writes_restricted, timeout=30, what="operator-writes policy to refuse")
    ok(create_as(operator, in_ns(tenant_ns)))
