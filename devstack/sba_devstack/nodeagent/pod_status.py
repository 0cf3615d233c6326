"""Pure builders for Pod `status` documents, shaped as a kubelet reports them.

Nothing here talks to the API or reads the clock: callers pass `now` and whatever they
observed, so every builder is unit-tested on plain dicts.
"""

from __future__ import annotations

import datetime
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

HOST_IP = "127.0.0.1"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
LOST_MESSAGE = "The container could not be located when the pod was terminated"
_STATE_KEYS = ("waiting", "running", "terminated")


def k8s_time(moment: datetime.datetime) -> str:
    """metav1.Time: RFC 3339, whole seconds, UTC."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime.datetime) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Termination:
    """How one run of a container ended."""

    exit_code: int
    reason: str
    message: str
    started_at: datetime.datetime
    finished_at: datetime.datetime
    signal: int | None = None

    def state(self, container_id: str) -> Json:
        terminated: Json = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": k8s_time(self.started_at),
            "finishedAt": k8s_time(self.finished_at),
            "containerID": container_id,
        }
        if self.message:
            terminated["message"] = self.message
        if self.signal is not None:
            terminated["signal"] = self.signal
        return {"terminated": terminated}


@dataclass(frozen=True)
class ContainerInfo:
    """Identity of the current run of a container."""

    name: str
    image: str
    image_id: str
    container_id: str
    restart_count: int = 0
    last_termination: Termination | None = None
    last_container_id: str = ""


def exit_code_of(returncode: int) -> int:
    """Popen's returncode -> a container exit code (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def signal_of(returncode: int) -> int | None:
    return -returncode if returncode < 0 else None


def container_reason(exit_code: int, *, oom_killed: bool = False, deadline: bool = False) -> str:
    if deadline:
        return "DeadlineExceeded"
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def termination_message(
    written: bytes, policy: str | None, exit_code: int, log_tail: bytes = b""
) -> str:
    """The container's termination message as the kubelet computes it.

    The file's content (at most 4096 bytes); with `FallbackToLogsOnError`, an empty file
    and a non-zero exit, the last 80 lines (at most 2048 bytes) of the log instead.
    """
    message = written[:MAX_TERMINATION_MESSAGE]
    if not message.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        lines = log_tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        message = b"".join(lines)[-FALLBACK_LOG_BYTES:]
    return message.decode("utf-8", errors="replace")


def _condition(kind: str, status: bool, now: str, reason: str = "", message: str = "") -> Json:
    cond: Json = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def merge_conditions(existing: Sequence[Mapping[str, Any]], new: Sequence[Json]) -> list[Json]:
    """Keep an existing condition's lastTransitionTime when its status did not change."""
    before = {str(c.get("type")): c for c in existing}
    merged: list[Json] = []
    for cond in new:
        old = before.get(cond["type"])
        if (
            old is not None
            and old.get("status") == cond["status"]
            and old.get("lastTransitionTime")
        ):
            cond = {**cond, "lastTransitionTime": old["lastTransitionTime"]}
        merged.append(cond)
    return merged


def _conditions(
    existing: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
    *,
    sandbox: bool,
    ready: bool,
    not_ready_reason: str = "",
    not_ready_message: str = "",
    incomplete: Sequence[str] = (),
) -> list[Json]:
    """`incomplete`: init containers that have not completed (Initialized False)."""
    at = k8s_time(now)
    reason = "" if ready else not_ready_reason
    message = "" if ready else not_ready_message
    initialized = (
        _condition(
            "Initialized",
            False,
            at,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
        if incomplete
        else _condition("Initialized", True, at)
    )
    return merge_conditions(
        existing,
        [
            _condition("PodReadyToStartContainers", sandbox, at),
            initialized,
            _condition("Ready", ready, at, reason, message),
            _condition("ContainersReady", ready, at, reason, message),
            _condition("PodScheduled", True, at),
        ],
    )


def _container_status(info: ContainerInfo, state: Json, *, ready: bool, started: bool) -> Json:
    status: Json = {
        "name": info.name,
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": info.restart_count,
        "image": info.image,
        "imageID": info.image_id,
        "containerID": info.container_id,
        "started": started,
    }
    if info.last_termination is not None:
        status["lastState"] = info.last_termination.state(
            info.last_container_id or info.container_id
        )
    return status


def _base(start_time: datetime.datetime, phase: str, conditions: list[Json]) -> Json:
    return {
        "phase": phase,
        "conditions": conditions,
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": HOST_IP,
        "podIPs": [{"ip": HOST_IP}],
        "startTime": k8s_time(start_time),
    }


def _terminal(phase: str) -> str:
    """The Ready/ContainersReady reason of a pod in a terminal phase."""
    return "PodCompleted" if phase == "Succeeded" else "PodFailed"


def running_status(
    info: ContainerInfo,
    *,
    started_at: datetime.datetime,
    start_time: datetime.datetime,
    now: datetime.datetime,
    existing_conditions: Sequence[Mapping[str, Any]] = (),
) -> Json:
    """Phase Running, the container running and ready."""
    status = _base(
        start_time, "Running", _conditions(existing_conditions, now, sandbox=True, ready=True)
    )
    state = {"running": {"startedAt": k8s_time(started_at)}}
    status["containerStatuses"] = [_container_status(info, state, ready=True, started=True)]
    return status


def terminated_status(
    info: ContainerInfo,
    termination: Termination,
    *,
    phase: str,
    start_time: datetime.datetime,
    now: datetime.datetime,
    existing_conditions: Sequence[Mapping[str, Any]] = (),
    reason: str = "",
    message: str = "",
) -> Json:
    """A terminal phase (Succeeded/Failed) with the container's final state.

    `reason`/`message` are the pod-level ones (e.g. DeadlineExceeded).
    """
    conditions = _conditions(
        existing_conditions, now, sandbox=False, ready=False, not_ready_reason=_terminal(phase)
    )
    status = _base(start_time, phase, conditions)
    state = termination.state(info.container_id)
    status["containerStatuses"] = [_container_status(info, state, ready=False, started=False)]
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


def waiting_status(
    name: str,
    image: str,
    *,
    reason: str,
    message: str,
    phase: str,
    start_time: datetime.datetime,
    now: datetime.datetime,
    existing_conditions: Sequence[Mapping[str, Any]] = (),
    pod_message: str = "",
) -> Json:
    """The container could not start (ErrImagePull, CreateContainerConfigError, ...)."""
    conditions = _conditions(
        existing_conditions,
        now,
        sandbox=True,
        ready=False,
        not_ready_reason="ContainersNotReady",
        not_ready_message=f"containers with unready status: [{name}]",
    )
    status = _base(start_time, phase, conditions)
    status["containerStatuses"] = [waiting_container(name, image, reason, message)]
    if pod_message:
        status["message"] = pod_message
        status["reason"] = reason
    return status


def waiting_container(name: str, image: str, reason: str, message: str = "") -> Json:
    """The status of a container that has not run (yet)."""
    waiting: Json = {"reason": reason}
    if message:
        waiting["message"] = message
    return {
        "name": name,
        "state": {"waiting": waiting},
        "lastState": {},
        "ready": False,
        "restartCount": 0,
        "image": image,
        "imageID": "",
        "started": False,
    }


def init_status(info: ContainerInfo, state: Json) -> Json:
    """One entry of initContainerStatuses: ready once it completed, started while running."""
    return _container_status(info, state, ready=init_completed(state), started="running" in state)


def init_completed(state: Mapping[str, Any]) -> bool:
    terminated = state.get("terminated") or {}
    return bool(terminated) and terminated.get("exitCode") == 0


def initializing_status(
    init_statuses: Sequence[Json],
    main_name: str,
    main_image: str,
    *,
    start_time: datetime.datetime,
    now: datetime.datetime,
    existing_conditions: Sequence[Mapping[str, Any]] = (),
    phase: str = "Pending",
    reason: str = "",
    message: str = "",
) -> Json:
    """The pod before its main container starts: Pending while init containers run (or
    back off), Failed once one failed for good. The main container waits PodInitializing.

    `reason`/`message` are the pod-level ones (ErrImagePull, DeadlineExceeded).
    """
    incomplete = [s["name"] for s in init_statuses if not init_completed(s.get("state") or {})]
    conditions = _conditions(
        existing_conditions,
        now,
        sandbox=phase == "Pending",
        ready=False,
        not_ready_reason="ContainersNotReady" if phase == "Pending" else _terminal(phase),
        not_ready_message=(
            f"containers with unready status: [{main_name}]" if phase == "Pending" else ""
        ),
        incomplete=incomplete,
    )
    status = _base(start_time, phase, conditions)
    status["initContainerStatuses"] = list(init_statuses)
    status["containerStatuses"] = [waiting_container(main_name, main_image, "PodInitializing")]
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


def lost_init_statuses(
    init_statuses: Sequence[Mapping[str, Any]], now: datetime.datetime
) -> list[Json] | None:
    """For a pod found initializing by a restarted agent: its init containers with the
    one that was running (or due to restart) marked ContainerStatusUnknown, as the
    kubelet marks containers it cannot find. None when initialization had completed."""
    if all(init_completed(s.get("state") or {}) for s in init_statuses):
        return None
    result: list[Json] = []
    for status in init_statuses:
        state = status.get("state") or {}
        untouched = "waiting" in state and not status.get("lastState")
        if init_completed(state) or untouched or "terminated" in state:
            result.append(dict(status))
            continue
        started = (state.get("running") or {}).get("startedAt") or k8s_time(now)
        lost = {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": LOST_MESSAGE,
            "startedAt": started,
            "finishedAt": k8s_time(now),
        }
        result.append({**status, "state": {"terminated": lost}, "ready": False, "started": False})
    return result


def status_patch(status: Mapping[str, Any]) -> Json:
    """A strategic-merge patch that makes the stored status equal `status`.

    Container states are one-of structs and merge key-by-key, so switching from
    `running` to `terminated` must null the other keys explicitly; pod-level
    reason/message are cleared when absent.
    """
    patch: Json = dict(status)
    for key in ("reason", "message"):
        patch.setdefault(key, None)
    for list_key in ("containerStatuses", "initContainerStatuses"):
        if list_key not in status:
            continue
        statuses = []
        for cs in status[list_key]:
            cs = dict(cs)
            for field in ("state", "lastState"):
                state = dict(cs.get(field) or {})
                for key in _STATE_KEYS:
                    state.setdefault(key, None)
                cs[field] = state
            statuses.append(cs)
        patch[list_key] = statuses
    return patch


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
