"""Pure parts of the local node agent: Pod status documents (init containers' too, and
the init-container sequence against a fake worker), image map, rlimits, env."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from sba_devstack.nodeagent.container_env import EnvError, build_env, expand
from sba_devstack.nodeagent.images import (
    ImageEntry,
    default_image_map,
    image_repository,
    parse_image_map,
    resolve_image,
)
from sba_devstack.nodeagent.init_sequence import InitSequence
from sba_devstack.nodeagent.kube import Kube
from sba_devstack.nodeagent.limits import GIB, derive_rlimits
from sba_devstack.nodeagent.pod_status import (
    DEADLINE_MESSAGE,
    LOST_MESSAGE,
    ContainerInfo,
    Json,
    Termination,
    container_reason,
    exit_code_of,
    init_status,
    initializing_status,
    lost_init_statuses,
    running_status,
    status_patch,
    terminated_status,
    termination_message,
    waiting_container,
    waiting_status,
)
from sba_devstack.nodeagent.pod_worker import NodeContext, PodWorker
from sba_devstack.nodeagent.quantity import parse_quantity
from sba_devstack.nodeagent.runs import Run
from sba_devstack.nodeagent.sandbox import Identity, resolve_identity
from sba_devstack.nodeagent.settings import NodeAgentSettings

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
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PodFailed"


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


# -- init containers -------------------------------------------------------------------

PREP = ContainerInfo("prepare", "busybox:1.36", "busybox@sha256:ab", "sba://i1")


def by_type(status: Json) -> dict[str, Json]:
    return {c["type"]: c for c in status["conditions"]}


def test_initializing_status_while_an_init_container_runs() -> None:
    running = init_status(PREP, {"running": {"startedAt": "2026-01-02T03:04:05Z"}})
    later = waiting_container("later", "busybox:1.36", "PodInitializing")
    status = initializing_status([running, later], "main", "tool:1", start_time=T0, now=T0)
    assert status["phase"] == "Pending"
    assert "reason" not in status
    conds = by_type(status)
    assert conds["Initialized"]["status"] == "False"
    assert conds["Initialized"]["reason"] == "ContainersNotInitialized"
    assert conds["Initialized"]["message"] == "containers with incomplete status: [prepare later]"
    assert conds["Ready"]["reason"] == "ContainersNotReady"
    assert conds["Ready"]["message"] == "containers with unready status: [main]"
    assert conds["PodReadyToStartContainers"]["status"] == "True"
    first, second = status["initContainerStatuses"]
    assert first["state"] == {"running": {"startedAt": "2026-01-02T03:04:05Z"}}
    assert first["started"] is True
    assert first["ready"] is False
    assert first["containerID"] == "sba://i1"
    assert second["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert second["started"] is False
    (main,) = status["containerStatuses"]
    assert main["name"] == "main"
    assert main["image"] == "tool:1"
    assert main["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert main["ready"] is False
    assert main["restartCount"] == 0


def test_completed_init_container_is_ready_and_not_incomplete() -> None:
    done = init_status(PREP, Termination(0, "Completed", "", T0, T1).state("sba://i1"))
    assert done["ready"] is True
    assert done["started"] is False
    assert done["state"]["terminated"]["reason"] == "Completed"
    nxt = init_status(
        ContainerInfo("next", "busybox", "id", "sba://i2"), {"running": {"startedAt": "x"}}
    )
    status = initializing_status([done, nxt], "main", "tool:1", start_time=T0, now=T1)
    message = by_type(status)["Initialized"]["message"]
    assert message == "containers with incomplete status: [next]"


def test_failed_init_container_fails_the_pod_with_the_main_one_never_started() -> None:
    failed = init_status(PREP, Termination(3, "Error", "nope", T0, T1).state("sba://i1"))
    status = initializing_status([failed], "main", "tool:1", start_time=T0, now=T1, phase="Failed")
    assert status["phase"] == "Failed"
    conds = by_type(status)
    assert conds["Initialized"]["status"] == "False"
    assert conds["Ready"]["reason"] == "PodFailed"
    assert conds["PodReadyToStartContainers"]["status"] == "False"
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 3
    assert init["state"]["terminated"]["reason"] == "Error"
    assert init["ready"] is False
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    # The patch nulls the init container's former `running` state.
    assert status_patch(status)["initContainerStatuses"][0]["state"]["running"] is None


def test_initializing_status_carries_a_pod_level_reason() -> None:
    pull = waiting_container("prepare", "nope:1", "ErrImagePull", "not here")
    status = initializing_status(
        [pull],
        "main",
        "tool:1",
        start_time=T0,
        now=T0,
        phase="Failed",
        reason="ErrImagePull",
        message="not here",
    )
    assert status["reason"] == "ErrImagePull"
    assert status["message"] == "not here"
    assert status["initContainerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImagePull", "message": "not here"}
    }


def test_lost_init_statuses_marks_the_running_one_unknown() -> None:
    done = init_status(PREP, Termination(0, "Completed", "", T0, T0).state("sba://i1"))
    running = init_status(
        ContainerInfo("second", "busybox", "id", "sba://i2"),
        {"running": {"startedAt": "2026-01-02T03:04:05Z"}},
    )
    never = waiting_container("third", "busybox", "PodInitializing")
    lost = lost_init_statuses([done, running, never], T1)
    assert lost is not None
    assert lost[0] == done
    assert lost[1]["state"]["terminated"] == {
        "exitCode": 137,
        "reason": "ContainerStatusUnknown",
        "message": LOST_MESSAGE,
        "startedAt": "2026-01-02T03:04:05Z",
        "finishedAt": "2026-01-02T03:04:12Z",
    }
    assert lost[1]["ready"] is False
    assert lost[2] == never
    assert lost_init_statuses([done], T1) is None  # initialized: the main container was lost


class FakeHost:
    """A pod worker whose container runs end as scripted: an exit code, or "env" (no
    config), "missing" (no executable), "gone" (pod vanished), "delete" (killed)."""

    def __init__(self, *outcomes: int | str) -> None:
        self.start_time = T0
        self.outcomes = list(outcomes)
        self.reports: list[Json] = []
        self.events: list[tuple[str, str]] = []
        self.runs: list[tuple[str, int]] = []
        self.pauses: list[float] = []
        self.deleted = False

    def run_container(
        self,
        container: Json,
        entry: ImageEntry,
        info: ContainerInfo,
        on_started: Callable[[datetime.datetime], None],
    ) -> Run | None:
        outcome = self.outcomes.pop(0)
        if outcome == "env":
            raise EnvError('secret "s" not found')
        if outcome == "missing":
            raise FileNotFoundError('exec: "nope": executable file not found in $PATH')
        self.runs.append((info.name, info.restart_count))
        on_started(T0)
        if outcome == "gone":
            return None
        killed_for = None
        if outcome == "delete":
            self.deleted, killed_for, outcome = True, "delete", 143
        assert isinstance(outcome, int)
        reason = container_reason(outcome)
        return Run(info, Termination(outcome, reason, "", T0, T1), killed_for)

    def patch_status(self, status: Json) -> None:
        self.reports.append(status)

    def conditions(self) -> list[Json]:
        return []

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return not self.deleted

    def deleting(self) -> bool:
        return self.deleted

    def event(self, container: str, reason: str, message: str, kind: str = "Normal") -> None:
        self.events.append((container, reason))

    def log(self, event: str, **fields: Any) -> None:
        pass


BUSYBOX_ENTRY = ImageEntry("busybox", "/bin:/usr/bin", ("sh",))


def sequence(
    host: FakeHost, policy: str = "Never", names: tuple[str, ...] = ("a",)
) -> InitSequence:
    inits = [({"name": n, "image": "busybox:1.36"}, BUSYBOX_ENTRY) for n in names]
    return InitSequence(host, inits, {"name": "main", "image": "tool:1"}, policy, "p_ns(u1)")


def init_states(status: Json) -> list[Json]:
    return [s["state"] for s in status["initContainerStatuses"]]


def test_init_containers_run_in_order_and_complete() -> None:
    host = FakeHost(0, 0)
    seq = sequence(host, names=("a", "b"))
    assert seq.run() is True
    assert host.runs == [("a", 0), ("b", 0)]
    first, second = host.reports
    assert first["phase"] == second["phase"] == "Pending"
    assert "running" in init_states(first)[0]
    assert init_states(first)[1] == {"waiting": {"reason": "PodInitializing"}}
    assert init_states(second)[0]["terminated"]["reason"] == "Completed"
    assert "running" in init_states(second)[1]
    assert [s["ready"] for s in seq.statuses] == [True, True]
    assert host.events == [("a", "Pulled"), ("a", "Started"), ("b", "Pulled"), ("b", "Started")]


def test_a_failed_init_container_under_never_fails_the_pod() -> None:
    host = FakeHost(3)
    assert sequence(host, names=("a", "b")).run() is False
    assert host.runs == [("a", 0)]
    final = host.reports[-1]
    assert final["phase"] == "Failed"
    failed, never = init_states(final)
    assert failed["terminated"]["exitCode"] == 3
    assert failed["terminated"]["reason"] == "Error"
    assert never == {"waiting": {"reason": "PodInitializing"}}
    assert final["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}


def test_a_failed_init_container_restarts_under_on_failure() -> None:
    host = FakeHost(1, 0)
    seq = sequence(host, policy="OnFailure")
    assert seq.run() is True
    assert host.runs == [("a", 0), ("a", 1)]
    backoff = next(r for r in host.reports if "waiting" in init_states(r)[0])
    assert backoff["phase"] == "Pending"
    (status,) = backoff["initContainerStatuses"]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "restarting failed container=a pod=p_ns(u1)" in status["state"]["waiting"]["message"]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    (done,) = seq.statuses
    assert done["state"]["terminated"]["reason"] == "Completed"
    assert done["restartCount"] == 1
    assert done["lastState"]["terminated"]["exitCode"] == 1
    assert ("a", "BackOff") in host.events
    assert host.pauses == [1.0]


def test_a_start_error_counts_as_a_failure() -> None:
    host = FakeHost("missing")
    assert sequence(host).run() is False
    (state,) = init_states(host.reports[-1])
    assert state["terminated"]["exitCode"] == 128
    assert state["terminated"]["reason"] == "StartError"
    assert "executable file not found" in state["terminated"]["message"]


def test_a_config_error_is_retried_while_the_pod_waits() -> None:
    host = FakeHost("env", 0)
    assert sequence(host).run() is True
    waiting = host.reports[0]
    assert waiting["phase"] == "Pending"
    assert init_states(waiting)[0]["waiting"]["reason"] == "CreateContainerConfigError"
    assert host.pauses == [2.0]


def test_deleting_the_pod_during_an_init_container_does_not_restart_it() -> None:
    host = FakeHost("delete")
    assert sequence(host, policy="Always").run() is False
    assert host.runs == [("a", 0)]
    final = host.reports[-1]
    assert final["phase"] == "Failed"
    assert init_states(final)[0]["terminated"]["exitCode"] == 143


def test_a_vanished_pod_is_not_reported() -> None:
    host = FakeHost("gone")
    assert sequence(host).run() is False
    assert all(r["phase"] == "Pending" for r in host.reports)


class RecordingKube:
    """Answers a status PATCH with the pod as patched; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Json:
        self.requests.append((method, path, body))
        return {"metadata": {"uid": "u1"}, "status": body["status"] if body else {}}

    def patches(self) -> list[Json]:
        return [body["status"] for method, _, body in self.requests if method == "PATCH"]


def lost_worker(tmp_path: Path, status: Json) -> tuple[PodWorker, RecordingKube]:
    """A worker for a pod the API says this node was already running."""
    kube = RecordingKube()
    ctx = NodeContext(
        NodeAgentSettings(work_dir=tmp_path), cast(Kube, kube), threading.Event(), False
    )
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {
            "initContainers": [{"name": "prepare", "image": "busybox"}],
            "containers": [{"name": "main", "image": "tool:1"}],
        },
        "status": {"startTime": "2026-01-02T03:04:05Z", **status},
    }
    return PodWorker(ctx, pod), kube


def test_a_restarted_agent_fails_a_pod_it_found_initializing(tmp_path: Path) -> None:
    running = init_status(PREP, {"running": {"startedAt": "2026-01-02T03:04:05Z"}})
    worker, kube = lost_worker(
        tmp_path,
        {
            "phase": "Pending",
            "initContainerStatuses": [running],
            "containerStatuses": [waiting_container("main", "tool:1", "PodInitializing")],
        },
    )
    worker._run()
    (status,) = kube.patches()
    assert status["phase"] == "Failed"
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert init["state"]["terminated"]["exitCode"] == 137
    assert status["containerStatuses"][0]["state"]["waiting"] == {"reason": "PodInitializing"}


def test_a_restarted_agent_keeps_completed_init_containers_of_a_lost_pod(
    tmp_path: Path,
) -> None:
    done = init_status(PREP, Termination(0, "Completed", "", T0, T0).state("sba://i1"))
    running = running_status(INFO, started_at=T0, start_time=T0, now=T0)
    worker, kube = lost_worker(tmp_path, {**running, "initContainerStatuses": [done]})
    worker._run()
    (status,) = kube.patches()
    assert status["phase"] == "Failed"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    main = status["containerStatuses"][0]["state"]["terminated"]
    assert main["reason"] == "ContainerStatusUnknown"
