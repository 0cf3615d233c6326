"""The local control plane is a working Kubernetes: each controller we rely on runs,
and RBAC is enforced for client-certificate users."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sba_devstack.controlplane import ControlPlane
from tests.fixtures.controlplane import Kubectl

pytestmark = pytest.mark.integration

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll until `probe` returns something truthy; controllers act asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"cp-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def test_apiserver_is_ready(kube_api: client.ApiClient) -> None:
    resp = kube_api.call_api("GET", f"{kube_api.configuration.host}/readyz")
    resp.read()  # type: ignore[no-untyped-call]
    assert resp.status == 200
    assert resp.data == b"ok"


def test_kubectl_version_and_namespaces(kubectl: Kubectl) -> None:
    version = kubectl("version", "-o", "json")
    assert version.returncode == 0, version.stderr
    assert '"gitVersion": "v1.35.4"' in version.stdout
    namespaces = kubectl("get", "ns", "-o", "name")
    assert namespaces.returncode == 0, namespaces.stderr
    assert {"namespace/default", "namespace/kube-system"} <= set(namespaces.stdout.split())


def test_job_creates_pending_pod_and_namespace_deletion_cleans_up(
    kube_api: client.ApiClient,
) -> None:
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    ns = f"cp-job-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    # No node carries this label, so the pod stays unschedulable even when
                    # another test has started the node agent in this session.
                    node_selector={"sba-agentic.io/test-no-such-node": "true"},
                    containers=[client.V1Container(name="main", image="busybox", args=["true"])],
                )
            ),
        ),
    )
    batch.create_namespaced_job(ns, job)

    def unschedulable_pod() -> Any:
        pods = core.list_namespaced_pod(ns, label_selector="job-name=hello").items
        for pod in pods:
            conditions = (pod.status.conditions if pod.status else None) or []
            for cond in conditions:
                if cond.type == "PodScheduled" and cond.reason == "Unschedulable":
                    return pod
        return None

    # Job controller made the pod; the scheduler looked at it and found no node.
    pod = eventually(unschedulable_pod, what="job pod marked Unschedulable")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None

    core.delete_namespace(ns)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as err:
            return bool(err.status == 404)
        return False

    eventually(namespace_gone, what=f"namespace {ns} to be finalized")


def test_resource_quota_status_is_populated(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="q"),
        spec=client.V1ResourceQuotaSpec(hard={"pods": "5", "configmaps": "10"}),
    )
    core.create_namespaced_resource_quota(namespace, quota)

    def status() -> Any:
        st = core.read_namespaced_resource_quota("q", namespace).status
        return st if st and st.hard and st.used is not None else None

    st = eventually(status, what="ResourceQuota status")
    assert st.hard == {"pods": "5", "configmaps": "10"}
    assert st.used["pods"] == "0"


def test_user_without_rbac_is_forbidden(control_plane: ControlPlane, kubectl: Kubectl) -> None:
    alice = control_plane.kubeconfig_for("alice", ["tenant:nobody"])
    can_i = kubectl("auth", "can-i", "list", "pods", "-n", "default", kubeconfig=alice)
    assert can_i.stdout.strip() == "no"
    assert can_i.returncode != 0
    listing = kubectl("get", "pods", "-n", "default", kubeconfig=alice)
    assert listing.returncode != 0
    assert "Forbidden" in listing.stderr
    assert 'User "alice" cannot list resource "pods"' in listing.stderr
    # Authenticated, just not authorised: `whoami` works and reports the groups.
    whoami = kubectl("auth", "whoami", "-o", "json", kubeconfig=alice)
    assert whoami.returncode == 0, whoami.stderr
    assert '"alice"' in whoami.stdout
    assert "tenant:nobody" in whoami.stdout


def test_redis_answers_ping(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    try:
        assert conn.ping()
    finally:
        conn.close()
