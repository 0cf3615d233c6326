"""The local node agent against the real control plane: the real scheduler binds pods to
its Node and the real Job controller reacts to the statuses it reports."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sba_devstack.nodeagent.kube import Json, Kube, KubeError
from tests.fixtures.nodeagent import NodeAgentHandle

pytestmark = pytest.mark.integration

RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def api(kubeconfig: Path, node_agent: NodeAgentHandle) -> Iterator[Kube]:
    kube = Kube.from_kubeconfig(kubeconfig)
    yield kube
    kube.close()


@pytest.fixture
def namespace(api: Kube) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted", with its default SA."""
    name = f"na-{uuid.uuid4().hex[:8]}"
    api.request(
        "POST",
        "/api/v1/namespaces",
        body={
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        },
    )
    wait_for(
        lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        what="the default ServiceAccount",
    )
    yield name
    with contextlib.suppress(KubeError):
        api.request("DELETE", f"/api/v1/namespaces/{name}")


def pod_spec(script: str, marker: str = "", **extra: Any) -> Json:
    env = [{"name": "SBA_TEST_MARKER", "value": marker}] if marker else []
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sh", "-c", script],
                "env": env,
                "securityContext": RESTRICTED_CONTAINER_SECURITY,
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            }
        ],
        **extra,
    }


def create_job(
    api: Kube,
    namespace: str,
    script: str,
    *,
    backoff_limit: int = 0,
    active_deadline_seconds: int | None = None,
    marker: str = "",
) -> str:
    name = f"job-{uuid.uuid4().hex[:6]}"
    spec: Json = {
        "backoffLimit": backoff_limit,
        "template": {"spec": pod_spec(script, marker)},
    }
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    api.request(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        body={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec},
    )
    return name


def create_pod(api: Kube, namespace: str, spec: Json) -> str:
    name = f"pod-{uuid.uuid4().hex[:6]}"
    api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        body={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec},
    )
    return name


def job_condition(api: Kube, namespace: str, name: str) -> Json | None:
    job = api.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    for cond in job.get("status", {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return dict(cond)
    return None


def job_pods(api: Kube, namespace: str, job: str) -> list[Json]:
    listing = api.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods",
        query={"labelSelector": f"job-name={job}"},
    )
    return list(listing["items"])


def get_pod(api: Kube, namespace: str, name: str) -> Json | None:
    return api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def terminated(pod: Json) -> Json:
    return dict(pod["status"]["containerStatuses"][0]["state"]["terminated"])


def marked_pids(marker: str) -> list[int]:
    """Host processes whose environment carries SBA_TEST_MARKER=<marker>."""
    needle = f"SBA_TEST_MARKER={marker}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def test_node_is_registered_ready_with_capacity(api: Kube, node_agent: NodeAgentHandle) -> None:
    node = api.request("GET", f"/api/v1/nodes/{node_agent.node_name}")
    status = node["status"]
    assert status["nodeInfo"]["kubeletVersion"] == "v1.35.4"
    assert int(status["allocatable"]["pods"]) > 0
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == node_agent.node_name
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Ready": "True",
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
    }
    assert not node["spec"].get("taints")
    lease = api.request(
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node_agent.node_name}",
    )
    assert lease["spec"]["holderIdentity"] == node_agent.node_name


def test_agent_acts_as_the_node_identity(node_agent: NodeAgentHandle) -> None:
    """Given the admin kubeconfig, the agent bootstrapped node credentials via a CSR."""
    assert node_agent.log_path is not None
    records = [json.loads(line) for line in node_agent.log_path.read_text().splitlines()]
    creds = [r for r in records if r.get("event") == "node.credentials"]
    assert creds, "the agent kept the admin identity"
    assert creds[0]["user"] == f"system:node:{node_agent.node_name}"


def test_node_authorizer_confines_the_agent(node_agent: NodeAgentHandle) -> None:
    """With its node kubeconfig the agent may not read arbitrary Secrets."""
    assert node_agent.work_dir is not None
    node = Kube.from_kubeconfig(node_agent.work_dir / "pki" / "node.kubeconfig")
    try:
        with pytest.raises(KubeError) as err:
            node.request("GET", "/api/v1/namespaces/kube-system/secrets")
        assert err.value.status == 403
        assert node.get(f"/api/v1/nodes/{node_agent.node_name}") is not None
    finally:
        node.close()


def test_job_completes_with_termination_message(api: Kube, namespace: str) -> None:
    created = time.monotonic()
    job = create_job(api, namespace, 'echo "all done" > "$SBA_TERMINATION_LOG"')
    cond = wait_for(lambda: job_condition(api, namespace, job), what="the Job to finish")
    elapsed = time.monotonic() - created
    assert cond["type"] == "Complete", cond
    (pod,) = job_pods(api, namespace, job)
    assert pod["status"]["phase"] == "Succeeded"
    state = terminated(pod)
    assert state["exitCode"] == 0
    assert state["reason"] == "Completed"
    assert state["message"] == "all done\n"
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("sba://")
    print(f"trivial Job complete after {elapsed:.2f}s")


def test_container_runs_as_non_root(api: Kube, namespace: str) -> None:
    job = create_job(api, namespace, 'id -u > "$SBA_TERMINATION_LOG"')
    cond = wait_for(lambda: job_condition(api, namespace, job), what="the Job to finish")
    assert cond["type"] == "Complete", cond
    (pod,) = job_pods(api, namespace, job)
    uid = terminated(pod)["message"].strip()
    assert uid.isdigit()
    assert int(uid) != 0
    assert int(uid) == 65534


def test_failing_job_exhausts_backoff_limit(api: Kube, namespace: str) -> None:
    job = create_job(api, namespace, "echo failing >&2; exit 3", backoff_limit=1)
    cond = wait_for(lambda: job_condition(api, namespace, job), timeout=90, what="the Job to fail")
    assert cond["type"] == "Failed", cond
    assert cond["reason"] == "BackoffLimitExceeded"
    pods = job_pods(api, namespace, job)
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        state = terminated(pod)
        assert state["exitCode"] == 3
        assert state["reason"] == "Error"


def test_job_deadline_kills_the_process(api: Kube, namespace: str) -> None:
    marker = uuid.uuid4().hex
    job = create_job(api, namespace, "sleep 60", active_deadline_seconds=2, marker=marker)
    wait_for(lambda: marked_pids(marker), timeout=30, what="the container process")
    cond = wait_for(lambda: job_condition(api, namespace, job), timeout=60, what="the Job to fail")
    assert cond["type"] == "Failed", cond
    assert cond["reason"] == "DeadlineExceeded"
    assert wait_for(lambda: not marked_pids(marker), timeout=10, what="the process to exit")


def test_pod_active_deadline_marks_pod_failed(api: Kube, namespace: str) -> None:
    marker = uuid.uuid4().hex
    name = create_pod(api, namespace, pod_spec("sleep 60", marker, activeDeadlineSeconds=2))
    pod = wait_for(
        lambda: (p := get_pod(api, namespace, name)) and p["status"].get("phase") == "Failed" and p,
        timeout=30,
        what="the pod to fail",
    )
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert terminated(pod)["reason"] == "DeadlineExceeded"
    assert not marked_pids(marker)


def test_deleting_a_running_pod_kills_its_process(api: Kube, namespace: str) -> None:
    marker = uuid.uuid4().hex
    name = create_pod(api, namespace, pod_spec("sleep 300", marker))
    pod = wait_for(
        lambda: (
            (p := get_pod(api, namespace, name)) and p["status"].get("phase") == "Running" and p
        ),
        timeout=30,
        what="the pod to run",
    )
    running = pod["status"]["containerStatuses"][0]
    assert running["ready"] is True
    assert "running" in running["state"]
    assert pod["status"]["podIP"] == "127.0.0.1"
    assert wait_for(lambda: marked_pids(marker), timeout=10, what="the container process")
    started = time.monotonic()
    api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
    wait_for(lambda: not marked_pids(marker), timeout=10, what="the process to exit")
    wait_for(lambda: get_pod(api, namespace, name) is None, timeout=15, what="the pod to go")
    # SIGTERM ends `sleep` at once, so the agent removes the pod long before the 30s grace.
    assert time.monotonic() - started < 15


def test_unknown_image_fails_the_pod(api: Kube, namespace: str) -> None:
    spec = pod_spec("true")
    spec["containers"][0]["image"] = "example.com/no-such-image:1"
    name = create_pod(api, namespace, spec)
    pod = wait_for(
        lambda: (p := get_pod(api, namespace, name)) and p["status"].get("phase") == "Failed" and p,
        timeout=30,
        what="the pod to fail",
    )
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert "example.com/no-such-image:1" in waiting["message"]


def test_tool_runtime_image_runs_the_venv_python_unprivileged(api: Kube, namespace: str) -> None:
    """The venv's interpreter may live under a directory the sandbox user cannot enter
    (here /root/.pyenv); the agent must still make it runnable as that user."""
    script = (
        "import os, sba_tools; "
        "open(os.environ['SBA_TERMINATION_LOG'], 'w').write(f'{os.getuid()} {sba_tools.__name__}')"
    )
    spec = pod_spec("")
    spec["containers"][0].update(
        {"image": "sba-agentic/tool-runtime:dev", "command": ["python", "-c", script]}
    )
    name = create_pod(api, namespace, spec)
    pod = wait_for(
        lambda: (
            (p := get_pod(api, namespace, name))
            and p["status"].get("phase") in ("Succeeded", "Failed")
            and p
        ),
        timeout=30,
        what="the pod to finish",
    )
    state = terminated(pod)
    assert pod["status"]["phase"] == "Succeeded", state
    assert state["message"] == "65534 sba_tools"


def test_job_latency(api: Kube, namespace: str) -> None:
    """Job created -> pod Running -> Job Complete, observed through a watch; generous
    bounds, printed for the record (run with -s)."""
    events: list[tuple[float, Json]] = []
    created = time.monotonic()
    job = create_job(api, namespace, "sleep 0.5")
    path = f"/api/v1/namespaces/{namespace}/pods"
    running_at = None
    for event in api.watch(path, {"labelSelector": f"job-name={job}"}, timeout_seconds=30):
        events.append((time.monotonic(), event))
        phase = event["object"].get("status", {}).get("phase")
        if phase == "Running" and running_at is None:
            running_at = time.monotonic() - created
        if phase in ("Succeeded", "Failed"):
            break
    assert running_at is not None, [e["object"].get("status") for _, e in events]
    wait_for(lambda: job_condition(api, namespace, job), what="the Job to finish")
    complete_at = time.monotonic() - created
    print(f"Job created -> pod Running {running_at:.2f}s -> Job Complete {complete_at:.2f}s")
    assert running_at < 5.0
    assert complete_at < 10.0


def test_memory_limit_is_enforced_as_oom_kill(api: Kube, namespace: str) -> None:
    spec = pod_spec("")
    spec["containers"][0].update(
        {
            "image": "sba-agentic/tool-runtime",
            "command": ["python", "-c", "import time; b = b'x' * (300 << 20); time.sleep(30)"],
        }
    )
    name = create_pod(api, namespace, spec)
    pod = wait_for(
        lambda: (
            (p := get_pod(api, namespace, name))
            and p["status"].get("phase") in ("Succeeded", "Failed")
            and p
        ),
        timeout=30,
        what="the pod to finish",
    )
    assert pod["status"]["phase"] == "Failed"
    state = terminated(pod)
    assert state["reason"] == "OOMKilled"
    assert state["exitCode"] == 137


def test_on_failure_restarts_in_place(api: Kube, namespace: str) -> None:
    script = 'if [ -f "$HOME/once" ]; then exit 0; fi; touch "$HOME/once"; exit 4'
    name = create_pod(api, namespace, pod_spec(script, restartPolicy="OnFailure"))
    pod = wait_for(
        lambda: (
            (p := get_pod(api, namespace, name))
            and p["status"].get("phase") in ("Succeeded", "Failed")
            and p
        ),
        timeout=30,
        what="the pod to finish",
    )
    assert pod["status"]["phase"] == "Succeeded"
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 4
    assert status["state"]["terminated"]["exitCode"] == 0


def finished(api: Kube, namespace: str, name: str, timeout: float = 60.0) -> Json:
    pod: Json = wait_for(
        lambda: (
            (p := get_pod(api, namespace, name))
            and p["status"].get("phase") in ("Succeeded", "Failed")
            and p
        ),
        timeout=timeout,
        what="the pod to finish",
    )
    return pod


def container_logs(node_agent: NodeAgentHandle, namespace: str, pod: str) -> dict[str, str]:
    """`<container>-<attempt>.log` -> content, for the pod's containers on this node."""
    for log_dir in node_agent.pod_log_dirs():
        if log_dir.name.startswith(f"{namespace}_{pod}_"):
            return {f.name: f.read_text(errors="replace") for f in log_dir.iterdir()}
    return {}


def _with_init(init_script: str, main_script: str) -> Json:
    """A pod whose init container and main container share emptyDir `work` at /work
    (scripts reach it as $WORK: the dev node translates env values and argv paths)."""
    spec = pod_spec(main_script)
    mount = [{"name": "work", "mountPath": "/work"}]
    env = [{"name": "WORK", "value": "/work"}]
    spec["initContainers"] = [
        {
            "name": "prepare",
            "image": "busybox:1.36",
            "command": ["sh", "-c", init_script],
            "env": env,
            "securityContext": RESTRICTED_CONTAINER_SECURITY,
            "volumeMounts": mount,
        }
    ]
    spec["containers"][0]["volumeMounts"] = mount
    spec["containers"][0]["env"] = env
    spec["volumes"] = [{"name": "work", "emptyDir": {}}]
    return spec


def test_an_init_container_writes_what_the_main_one_reads(
    api: Kube, namespace: str, node_agent: NodeAgentHandle
) -> None:
    # Paths are translated as whole argv elements, not inside a script: hence "$1".
    spec = _with_init("", "")
    spec["initContainers"][0]["command"] = ["sh", "-c", 'echo hi > "$1"', "sh", "/work/x"]
    spec["containers"][0]["command"] = ["cat", "/work/x"]
    name = create_pod(api, namespace, spec)
    pod = finished(api, namespace, name)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["name"] == "prepare"
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["ready"] is True
    main = pod["status"]["containerStatuses"][0]
    assert main["name"] == "main"
    assert main["state"]["terminated"]["reason"] == "Completed"
    assert main["imageID"]
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Initialized"] == "True"
    if node_agent.work_dir is not None:
        logs = container_logs(node_agent, namespace, name)
        assert logs.get("main-0.log") == "hi\n", logs
        assert "prepare-0.log" in logs


def test_init_containers_run_first_and_share_emptydirs(api: Kube, namespace: str) -> None:
    # The main container runs a program the init container put into the shared volume,
    # by its container path (as a tool pod runs the copied entrypoint).
    spec = _with_init(
        """printf '#!/bin/sh\\necho from-init > "$SBA_TERMINATION_LOG"\\n' > "$WORK/hello"
        chmod +x "$WORK/hello" """,
        "",
    )
    spec["containers"][0]["command"] = ["/work/hello"]
    pod = finished(api, namespace, create_pod(api, namespace, spec))
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert terminated(pod)["message"].strip() == "from-init"


def test_the_tool_entrypoint_is_installed_by_an_init_container(
    api: Kube, namespace: str, node_agent: NodeAgentHandle
) -> None:
    """The operator's shape for user tools: `sba-step install` from the tool runtime
    image into emptyDir sba-bin, then the user's image runs /sba/bin/sba-step, with /tmp
    an emptyDir too and HOME=/tmp."""
    spec = pod_spec("")
    bin_mount = {"name": "sba-bin", "mountPath": "/sba/bin"}
    spec["initContainers"] = [
        {
            "name": "sba-entrypoint",
            "image": "sba-agentic/tool-runtime:dev",
            "command": ["sba-step", "install", "/sba/bin/sba-step"],
            "securityContext": RESTRICTED_CONTAINER_SECURITY,
            "volumeMounts": [bin_mount],
        }
    ]
    spec["containers"][0].update(
        {
            "command": ["/sba/bin/sba-step", "version"],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {**bin_mount, "readOnly": True},
            ],
        }
    )
    spec["volumes"] = [{"name": "tmp", "emptyDir": {}}, {"name": "sba-bin", "emptyDir": {}}]
    name = create_pod(api, namespace, spec)
    pod = finished(api, namespace, name)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    if node_agent.work_dir is not None:
        logs = container_logs(node_agent, namespace, name)
        assert logs.get("main-0.log", "").startswith("sba-step "), logs


def test_a_failing_init_container_fails_the_pod_before_the_main_one(
    api: Kube, namespace: str, node_agent: NodeAgentHandle
) -> None:
    spec = _with_init("echo nope >&2; exit 3", 'touch "$WORK/main-ran"')
    name = create_pod(api, namespace, spec)
    pod = wait_for(
        lambda: (p := get_pod(api, namespace, name)) and p["status"].get("phase") == "Failed" and p,
        what="the pod to fail",
    )
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 3
    assert init["state"]["terminated"]["reason"] == "Error"
    main = pod["status"]["containerStatuses"][0]
    assert main["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert main["restartCount"] == 0
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["Initialized"]["status"] == "False"
    assert conditions["Initialized"]["reason"] == "ContainersNotInitialized"
    if node_agent.work_dir is not None:
        logs = container_logs(node_agent, namespace, name)
        assert logs.get("prepare-0.log") == "nope\n", logs
        assert "main-0.log" not in logs  # the main container never started


def test_an_unknown_init_container_image_fails_the_pod(api: Kube, namespace: str) -> None:
    spec = _with_init("true", "true")
    spec["initContainers"][0]["image"] = "example.com/no-such-image:1"
    pod = finished(api, namespace, create_pod(api, namespace, spec), timeout=30)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "ErrImagePull"
    waiting = pod["status"]["initContainerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert "example.com/no-such-image:1" in waiting["message"]
    main = pod["status"]["containerStatuses"][0]
    assert main["state"] == {"waiting": {"reason": "PodInitializing"}}


def test_a_failing_init_container_restarts_under_on_failure(api: Kube, namespace: str) -> None:
    spec = _with_init('if [ -f "$WORK/once" ]; then exit 0; fi; touch "$WORK/once"; exit 4', "true")
    spec["restartPolicy"] = "OnFailure"
    pod = finished(api, namespace, create_pod(api, namespace, spec))
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["restartCount"] == 1
    assert init["lastState"]["terminated"]["exitCode"] == 4
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_deleting_a_pod_kills_its_running_init_container(api: Kube, namespace: str) -> None:
    marker = uuid.uuid4().hex
    spec = _with_init("sleep 300", "true")
    spec["initContainers"][0]["env"].append({"name": "SBA_TEST_MARKER", "value": marker})
    name = create_pod(api, namespace, spec)
    pod = wait_for(
        lambda: (
            (p := get_pod(api, namespace, name))
            and "running" in (p["status"].get("initContainerStatuses") or [{}])[0].get("state", {})
            and p
        ),
        timeout=30,
        what="the init container to run",
    )
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "PodInitializing"}
    }
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Initialized"] == "False"
    assert wait_for(lambda: marked_pids(marker), timeout=10, what="the init process")
    api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
    wait_for(lambda: not marked_pids(marker), timeout=10, what="the process to exit")
    wait_for(lambda: get_pod(api, namespace, name) is None, timeout=15, what="the pod to go")


def test_a_job_with_an_init_container_completes(api: Kube, namespace: str) -> None:
    name = f"job-{uuid.uuid4().hex[:6]}"
    spec = _with_init('echo ready > "$WORK/flag"', 'test "$(cat "$WORK/flag")" = ready')
    api.request(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        body={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": spec}},
        },
    )
    cond = wait_for(lambda: job_condition(api, namespace, name), what="the Job to finish")
    assert cond["type"] == "Complete", cond
    (pod,) = job_pods(api, namespace, name)
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == (
        "Completed"
    )
