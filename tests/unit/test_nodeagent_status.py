"""Pure parts of the local node agent: Pod status documents, image map, rlimits, env."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from sba_devstack.nodeagent.container_env import EnvError, build_env, expand
from sba_devstack.nodeagent.images import (
    ImageEntry,
    default_image_map,
    image_repository,
    parse_image_map,
    resolve_image,
)
from sba_devstack.nodeagent.limits import GIB, derive_rlimits
from sba_devstack.nodeagent.pod_status import (
    DEADLINE_MESSAGE,
    ContainerInfo,
    Termination,
    container_reason,
    exit_code_of,
    running_status,
    status_patch,
    terminated_status,
    termination_message,
    waiting_status,
)
from sba_devstack.nodeagent.quantity import parse_quantity
from sba_devstack.nodeagent.sandbox import Identity, resolve_identity

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=7)
INFO = ContainerInfo("main", "busybox:1.36", "busybox@sha256:ab", "sba://c1")


def conditions(status: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]


def test_running_status() -> None:
    status = running_status(INFO, started_at=T0, start_time=T0, now=T0)
    assert status["phase"] == "Running"
    assert status["startTime"] == "2026-01-02T03:04:05Z"
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    assert conditions(status) == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    (cs,) = status["containerStatuses"]
    assert cs["state"] == {"running": {"startedAt": "2026-01-02T03:04:05Z"}}
    assert cs["ready"] is True
    assert cs["restartCount"] == 0
    assert cs["containerID"] == "sba://c1"
    assert cs["imageID"] == "busybox@sha256:ab"
    assert cs["image"] == "busybox:1.36"


def test_existing_condition_keeps_its_transition_time() -> None:
    scheduled = {
        "type": "PodScheduled",
        "status": "True",
        "lastTransitionTime": "2020-01-01T00:00:00Z",
    }
    status = running_status(
        INFO, started_at=T1, start_time=T0, now=T1, existing_conditions=[scheduled]
    )
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["PodScheduled"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert by_type["Ready"]["lastTransitionTime"] == "2026-01-02T03:04:12Z"


def test_succeeded_status() -> None:
    term = Termination(0, "Completed", "done\n", T0, T1)
    status = terminated_status(INFO, term, phase="Succeeded", start_time=T0, now=T1)
    assert status["phase"] == "Succeeded"
    assert "reason" not in status
    assert conditions(status)["Ready"] == "False"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PodCompleted"
    (cs,) = status["containerStatuses"]
    assert cs["state"]["terminated"] == {
        "exitCode": 0,
        "reason": "Completed",
        "message": "done\n",
        "startedAt": "2026-01-02T03:04:05Z",
        "finishedAt": "2026-01-02T03:04:12Z",
        "containerID": "sba://c1",
    }
    assert cs["ready"] is False


def test_failed_status_with_message_and_restart_history() -> None:
    first = Termination(3, "Error", "first try", T0, T0)
    info = ContainerInfo("main", "busybox", "id", "sba://c2", 1, first, "sba://c1")
    term = Termination(exit_code_of(-9), container_reason(137), "boom", T0, T1, signal=9)
    status = terminated_status(info, term, phase="Failed", start_time=T0, now=T1)
    assert status["phase"] == "Failed"
    (cs,) = status["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 137
    assert cs["state"]["terminated"]["reason"] == "Error"
    assert cs["state"]["terminated"]["message"] == "boom"
    assert cs["state"]["terminated"]["signal"] == 9
    assert cs["restartCount"] == 1
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["containerID"] == "sba://c1"


def test_deadline_exceeded_status() -> None:
    term = Termination(143, container_reason(143, deadline=True), "", T0, T1)
    status = terminated_status(
        INFO,
        term,
        phase="Failed",
        start_time=T0,
        now=T1,
        reason="DeadlineExceeded",
        message=DEADLINE_MESSAGE,
    )
    assert status["phase"] == "Failed"
    assert status["reason"] == "DeadlineExceeded"
    assert status["message"] == DEADLINE_MESSAGE
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "DeadlineExceeded"


def test_waiting_status_for_unknown_image() -> None:
    status = waiting_status(
        "main",
        "nope:1",
        reason="ErrImagePull",
        message="not here",
        phase="Failed",
        start_time=T0,
        now=T0,
        pod_message="not here",
    )
    assert status["phase"] == "Failed"
    assert status["reason"] == "ErrImagePull"
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImagePull", "message": "not here"}
    }
    assert conditions(status)["ContainersReady"] == "False"


def test_status_patch_nulls_the_other_states() -> None:
    term = Termination(0, "Completed", "", T0, T1)
    patch = status_patch(terminated_status(INFO, term, phase="Succeeded", start_time=T0, now=T1))
    state = patch["containerStatuses"][0]["state"]
    assert state["running"] is None
    assert state["waiting"] is None
    assert state["terminated"]["exitCode"] == 0
    assert patch["containerStatuses"][0]["lastState"] == {
        "waiting": None,
        "running": None,
        "terminated": None,
    }
    assert patch["reason"] is None
    assert patch["message"] is None


@pytest.mark.parametrize(("returncode", "exit_code"), [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_codes(returncode: int, exit_code: int) -> None:
    assert exit_code_of(returncode) == exit_code


def test_container_reasons() -> None:
    assert container_reason(0) == "Completed"
    assert container_reason(1) == "Error"
    assert container_reason(137, oom_killed=True) == "OOMKilled"
    assert container_reason(143, deadline=True) == "DeadlineExceeded"


def test_termination_message_file_wins_and_is_capped() -> None:
    assert termination_message(b"x" * 5000, None, 1, b"log") == "x" * 4096
    assert termination_message(b"", None, 1, b"log line") == ""


def test_termination_message_falls_back_to_logs_on_error_only() -> None:
    logs = b"".join(f"line {i}\n".encode() for i in range(100))
    message = termination_message(b"", "FallbackToLogsOnError", 2, logs)
    assert message.endswith("line 99\n")
    assert "line 19\n" not in message  # only the last 80 lines
    assert termination_message(b"", "FallbackToLogsOnError", 0, logs) == ""
    assert termination_message(b"msg", "FallbackToLogsOnError", 2, logs) == "msg"


# -- image map ------------------------------------------------------------------------


def test_image_repository_strips_tag_and_digest() -> None:
    assert image_repository("busybox:1.36") == "busybox"
    assert image_repository("localhost:5000/sba-agentic/tool-runtime:v1") == (
        "localhost:5000/sba-agentic/tool-runtime"
    )
    assert image_repository("busybox@sha256:abc") == "busybox"
    assert image_repository("registry:5000/x") == "registry:5000/x"


def test_default_image_map() -> None:
    images = default_image_map("/opt/venv")
    assert images["sba-agentic/tool-runtime"].path == "/opt/venv/bin"
    assert images["busybox"].path == "/bin:/usr/bin"


def test_resolve_image_by_repository_suffix() -> None:
    images = default_image_map("/opt/venv")
    tool = resolve_image("ghcr.io/acme/sba-agentic/tool-runtime:1.2", images)
    assert tool is not None
    assert tool.path == "/opt/venv/bin"
    assert tool.search_path().startswith("/opt/venv/bin:")
    busybox = resolve_image("docker.io/library/busybox:1.36", images)
    assert busybox is not None
    assert busybox.repository == "busybox"
    assert resolve_image("example.com/other:1", images) is None
    assert resolve_image("acme-busybox:1", images) is None


def test_parse_image_map_overlays_defaults() -> None:
    images = parse_image_map(
        '{"acme/tool": "/srv/tool/bin", "busybox": "/usr/lib/busybox", '
        '"x/y": {"path": "/p", "entrypoint": ["run"]}}',
        default_image_map("/v"),
    )
    assert images["acme/tool"] == ImageEntry("acme/tool", "/srv/tool/bin")
    assert images["busybox"].path == "/usr/lib/busybox"
    assert images["busybox"].entrypoint == ("sh",)  # kept from the default
    assert images["x/y"].entrypoint == ("run",)
    assert images["sba-agentic/tool-runtime"].path == "/v/bin"


@pytest.mark.parametrize(
    "bad", ["[1]", "{", '{"a": 3}', '{"a": {"path": "/p", "entrypoint": "x"}}']
)
def test_parse_image_map_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="SBA_NODE_IMAGE_MAP"):
        parse_image_map(bad, {})


# -- resources ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("1.5G", Decimal("1.5e9")),
    ],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("lots")


def test_rlimits_from_limits() -> None:
    limits = {"memory": "512Mi", "cpu": "500m", "ephemeral-storage": "1Gi"}
    rlimits = derive_rlimits(limits, active_deadline_seconds=60, cpu_count=8)
    assert rlimits["RLIMIT_AS"] == 4 * 512 * 2**20
    assert rlimits["RLIMIT_CPU"] == 31
    assert rlimits["RLIMIT_FSIZE"] == GIB
    assert rlimits["RLIMIT_NOFILE"] == 4096
    assert rlimits["RLIMIT_CORE"] == 0


def test_rlimits_small_memory_gets_address_space_headroom() -> None:
    assert derive_rlimits({"memory": "64Mi"})["RLIMIT_AS"] == GIB


def test_rlimits_without_limits() -> None:
    rlimits = derive_rlimits({})
    assert "RLIMIT_AS" not in rlimits
    assert "RLIMIT_CPU" not in rlimits
    assert "RLIMIT_FSIZE" not in rlimits
    # A deadline without a cpu limit: every core for the whole deadline.
    assert derive_rlimits({}, active_deadline_seconds=10, cpu_count=4)["RLIMIT_CPU"] == 41


# -- env and identity -----------------------------------------------------------------

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "n1"},
    "status": {"podIP": "127.0.0.1"},
}


def test_build_env_resolves_refs_and_sources() -> None:
    container = {
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)-b-$$(A)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "c"}}},
        ]
    }
    data = {("ns", "secret", "sec"): {"k": "secret-value"}, ("ns", "configmap", "cm"): {"c": "cv"}}
    env = build_env(
        POD, container, lambda ns, kind, name: data.get((ns, kind, name)), {"PATH": "/x"}
    )
    assert env == {
        "PATH": "/x",
        "A": "a",
        "B": "a-b-$(A)",
        "POD": "p",
        "UID": "u-1",
        "APP": "x",
        "NODE": "n1",
        "IP": "127.0.0.1",
        "S": "secret-value",
        "C": "cv",
    }


def test_build_env_missing_secret_is_an_error_unless_optional() -> None:
    ref = {"name": "missing", "key": "k"}
    container = {"env": [{"name": "S", "valueFrom": {"secretKeyRef": ref}}]}
    with pytest.raises(EnvError, match="missing"):
        build_env(POD, container, lambda ns, kind, name: None)
    optional = {"env": [{"name": "S", "valueFrom": {"secretKeyRef": {**ref, "optional": True}}}]}
    assert build_env(POD, optional, lambda ns, kind, name: None) == {}


def test_expand_leaves_unknown_refs() -> None:
    assert expand("$(X) $(Y)", {"X": "1"}) == "1 $(Y)"


def test_identity_prefers_container_then_pod_then_fallback() -> None:
    assert resolve_identity({"runAsUser": 1000}, {"runAsUser": 2000}, "nobody", True).uid == 2000
    pod_only = resolve_identity({"runAsUser": 1000, "fsGroup": 3000}, {}, "nobody", True)
    assert pod_only.uid == 1000
    assert pod_only.groups == (3000,)
    assert resolve_identity({}, {}, "nobody", True).uid == 65534
    assert resolve_identity({}, {}, "1234:5678", True) == Identity(1234, 5678)
    assert resolve_identity({"runAsUser": 1000}, {}, "nobody", False) == Identity(None, None)
