"""One thread per Pod bound to this node: run its containers and report its status.

The worker owns the pod from the moment the agent first sees it until the API deletes
it: it runs the init containers in order (init_sequence.py), then starts the main
container, reports Running, supervises the process (exit, deadline, memory, deletion),
reports the terminal status and, once the pod carries a deletionTimestamp, kills what is
left and removes the pod with grace 0 as a kubelet does.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sba_devstack.nodeagent import container_spec, events, sandbox
from sba_devstack.nodeagent.container_env import EnvError
from sba_devstack.nodeagent.images import ImageEntry, resolve_image
from sba_devstack.nodeagent.init_sequence import InitSequence, pending_statuses
from sba_devstack.nodeagent.kube import API_ERRORS, STRATEGIC_MERGE, Json, Kube, KubeError
from sba_devstack.nodeagent.limits import memory_limit_bytes
from sba_devstack.nodeagent.logs import log
from sba_devstack.nodeagent.pod_status import (
    DEADLINE_MESSAGE,
    LOST_MESSAGE,
    ContainerInfo,
    Termination,
    container_reason,
    exit_code_of,
    initializing_status,
    lost_init_statuses,
    running_status,
    signal_of,
    status_patch,
    terminated_status,
    termination_message,
    waiting_container,
    waiting_status,
)
from sba_devstack.nodeagent.runs import Run, backoff_seconds, should_restart
from sba_devstack.nodeagent.settings import NodeAgentSettings

DEFAULT_GRACE_SECONDS = 30
MEMORY_CHECK_INTERVAL = 0.5
LOG_TAIL_BYTES = 16384
STATUS_RETRIES = 5


@dataclass(frozen=True)
class NodeContext:
    """What every worker shares: settings, the API client and the agent's stop flag."""

    settings: NodeAgentSettings
    kube: Kube
    stop: threading.Event
    agent_is_root: bool


@dataclass(frozen=True)
class Outcome:
    """How supervision ended: the process's returncode and why we killed it, if we did."""

    returncode: int
    killed_for: str | None  # "delete" | "deadline" | "oom" | "gone" | "stop" | None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _unsupported(containers: Sequence[Json], inits: Sequence[Json]) -> str:
    """Why this node cannot run the pod's containers at all; "" when it can."""
    if len(containers) != 1:
        return (
            "the sba node agent runs pods with exactly one container "
            f"(after any init containers), not {len(containers)}"
        )
    sidecars = [str(c["name"]) for c in inits if c.get("restartPolicy") == "Always"]
    if sidecars:
        return f"the sba node agent does not run sidecar init containers: {', '.join(sidecars)}"
    return ""


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Json) -> None:
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self._ctx = ctx
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._deleting = threading.Event()
        self._gone = threading.Event()
        self._pgid: int | None = None
        self._init_statuses: list[Json] = []
        """initContainerStatuses once initialized: every later status report carries them."""
        self._dirs = container_spec.PodDirs.of(
            ctx.settings.work_dir, self.namespace, self.name, self.uid
        )
        self.start_time = _parse_time(pod.get("status", {}).get("startTime")) or _now()
        self.thread = threading.Thread(
            target=self._main, name=f"pod-{self.namespace}/{self.name}", daemon=True
        )
        self.update(pod)

    # -- called from the watch thread -------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def update(self, pod: Json) -> None:
        with self._lock:
            self._pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self._deleting.set()
        self._wake.set()

    def removed(self) -> None:
        """The Pod is gone from the API: kill its process right away."""
        self._gone.set()
        self._kill(signal.SIGKILL)
        self._wake.set()

    def kill(self) -> None:
        """Agent shutdown: kill the process group (status is not reported)."""
        self._kill(signal.SIGKILL)
        self._wake.set()

    # -- helpers (the public ones serve InitSequence too) -----------------------------

    @property
    def pod(self) -> Json:
        with self._lock:
            return self._pod

    @property
    def _key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _kill(self, sig: int) -> None:
        pgid = self._pgid
        if pgid is not None:
            sandbox.kill_group(pgid, sig)

    def _stopped(self) -> bool:
        return self._ctx.stop.is_set() or self._gone.is_set()

    def deleting(self) -> bool:
        return self._deleting.is_set()

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early for pod updates; callers re-check their conditions."""
        self._wake.wait(seconds)
        self._wake.clear()

    def pause(self, seconds: float) -> bool:
        """Sleep `seconds`; False as soon as the pod is being deleted or the agent stops."""
        until = time.monotonic() + seconds
        while not (self._stopped() or self._deleting.is_set()):
            left = until - time.monotonic()
            if left <= 0:
                return True
            self._sleep(left)
        return False

    def _log(self, event: str, **fields: Any) -> None:
        log(event, pod=self._key, uid=self.uid, **fields)

    def log(self, event: str, **fields: Any) -> None:
        self._log(event, **fields)

    def event(self, container: str, reason: str, message: str, kind: str = "Normal") -> None:
        node = self._ctx.settings.node_name
        events.record(self._ctx.kube, self.pod, container, node, reason, message, kind)

    def patch_status(self, status: Json) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        if self._init_statuses and "initContainerStatuses" not in status:
            status = {**status, "initContainerStatuses": list(self._init_statuses)}
        body = {"metadata": {"uid": self.uid}, "status": status_patch(status)}
        for attempt in range(STATUS_RETRIES):
            try:
                updated = self._ctx.kube.request(
                    "PATCH", path, body=body, content_type=STRATEGIC_MERGE
                )
            except KubeError as err:
                if err.status in (404, 409, 422) or attempt == STATUS_RETRIES - 1:
                    self._log("pod.status_failed", error=str(err))
                    return
            except API_ERRORS as err:
                if attempt == STATUS_RETRIES - 1:
                    self._log("pod.status_failed", error=str(err))
                    return
            else:
                with self._lock:
                    if updated["metadata"].get("uid") == self.uid:
                        self._pod = updated
                return
            time.sleep(0.2 * 2**attempt)

    def conditions(self) -> list[Json]:
        conditions: list[Json] = self.pod.get("status", {}).get("conditions") or []
        return conditions

    def _delete_from_api(self) -> None:
        """Final removal, as the kubelet does once the containers are gone."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            self._ctx.kube.request(
                "DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{self.name}", body=body
            )
            self._log("pod.deleted")
        except KubeError as err:
            if err.status not in (404, 409):
                self._log("pod.delete_failed", error=str(err))
        except API_ERRORS as err:
            self._log("pod.delete_failed", error=str(err))

    # -- the pod's lifetime -----------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
            self._await_deletion()
        except Exception as err:
            self._log("pod.worker_crashed", error=repr(err))
            self.kill()
        finally:
            self._cleanup()

    def _await_deletion(self) -> None:
        while not self._stopped():
            if self._deleting.is_set():
                self._delete_from_api()
                return
            self._sleep(1.0)

    def _run(self) -> None:
        pod = self.pod
        spec = pod.get("spec", {})
        status = pod.get("status", {})
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        if phase == "Running" or status.get("containerStatuses"):
            self._report_lost(spec, status)
            return
        if self._deleting.is_set():
            return
        containers = spec.get("containers") or []
        inits: list[Json] = spec.get("initContainers") or []
        refusal = _unsupported(containers, inits)
        if refusal:
            first = containers[0] if containers else {"name": "main"}
            self._report_waiting(
                first["name"],
                first.get("image", ""),
                "CreateContainerConfigError",
                refusal,
                "Failed",
            )
            return
        container: Json = containers[0]
        resolved = self._resolve_images(pod, container, inits)
        if resolved is None:
            return
        entry, init_entries = resolved
        container_spec.prepare(self._dirs, spec, self._identity(spec, container))
        if init_entries:
            pod_ref = f"{self.name}_{self.namespace}({self.uid})"
            policy = spec.get("restartPolicy", "Always")
            sequence = InitSequence(self, init_entries, container, policy, pod_ref)
            initialized = sequence.run()
            self._init_statuses = sequence.statuses
            if not initialized:
                return
        self._run_main(spec, container, entry)

    def _resolve_images(
        self, pod: Json, container: Json, inits: list[Json]
    ) -> tuple[ImageEntry, list[tuple[Json, ImageEntry]]] | None:
        """The entries for the main and init containers; None (pod failed) if one has none."""
        init_entries: list[tuple[Json, ImageEntry]] = []
        for index, init in enumerate(inits):
            init_entry = self._resolve(pod, init)
            if isinstance(init_entry, str):
                statuses = pending_statuses(inits)
                statuses[index] = waiting_container(
                    init["name"], init.get("image", ""), "ErrImagePull", init_entry
                )
                self._report_initializing(statuses, container, "Failed", "ErrImagePull", init_entry)
                return None
            init_entries.append((init, init_entry))
        entry = self._resolve(pod, container)
        if isinstance(entry, str):
            self._report_waiting(
                container["name"], container.get("image", ""), "ErrImagePull", entry, "Failed"
            )
            return None
        return entry, init_entries

    def _resolve(self, pod: Json, container: Json) -> ImageEntry | str:
        """The node's entry for `container`'s image, else why not (ErrImagePull)."""
        image = str(container.get("image", ""))
        entry = resolve_image(image, self._ctx.settings.image_map)
        if entry is not None:
            return entry
        known = ", ".join(sorted(self._ctx.settings.image_map))
        message = (
            f'Failed to pull image "{image}": not available on node '
            f"{self._ctx.settings.node_name} (SBA_NODE_IMAGE_MAP knows: {known})"
        )
        self.event(container["name"], "Failed", message, "Warning")
        self._log("pod.image_unknown", container=container["name"], image=image)
        return message

    def _report_lost(self, spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """A pod that was running (or initializing) before this agent started: its
        process is unknown, so the pod fails as the kubelet fails containers it lost."""
        containers = spec.get("containers") or [{"name": "main", "image": ""}]
        container = containers[0]
        now = _now()
        stored_inits: list[Json] = status.get("initContainerStatuses") or []
        lost_inits = lost_init_statuses(stored_inits, now)
        if lost_inits is not None:
            self._report_initializing(lost_inits, container, "Failed")
            self._log("pod.failed", reason="ContainerStatusUnknown", initializing=True)
            return
        self._init_statuses = stored_inits
        info = ContainerInfo(container["name"], container.get("image", ""), "", "")
        termination = Termination(137, "ContainerStatusUnknown", LOST_MESSAGE, self.start_time, now)
        self.patch_status(
            terminated_status(
                info,
                termination,
                phase="Failed",
                start_time=self.start_time,
                now=now,
                existing_conditions=self.conditions(),
            )
        )
        self._log("pod.failed", reason="ContainerStatusUnknown", exitCode=137)

    def _report_initializing(
        self,
        statuses: list[Json],
        main: Mapping[str, Any],
        phase: str,
        reason: str = "",
        message: str = "",
    ) -> None:
        self.patch_status(
            initializing_status(
                statuses,
                str(main["name"]),
                str(main.get("image", "")),
                start_time=self.start_time,
                now=_now(),
                existing_conditions=self.conditions(),
                phase=phase,
                reason=reason,
                message=message,
            )
        )
        self._log("pod.waiting", phase=phase, reason=reason, message=message)

    def _report_waiting(self, name: str, image: str, reason: str, message: str, phase: str) -> None:
        self.patch_status(
            waiting_status(
                name,
                image,
                reason=reason,
                message=message,
                phase=phase,
                start_time=self.start_time,
                now=_now(),
                existing_conditions=self.conditions(),
                pod_message=message if phase == "Failed" else "",
            )
        )
        self._log("pod.waiting", phase=phase, reason=reason, message=message)

    # -- running containers -----------------------------------------------------------

    def _identity(self, spec: Mapping[str, Any], container: Mapping[str, Any]) -> sandbox.Identity:
        return sandbox.resolve_identity(
            spec.get("securityContext") or {},
            container.get("securityContext") or {},
            self._ctx.settings.sandbox_user,
            self._ctx.agent_is_root,
        )

    def run_container(
        self,
        container: Json,
        entry: ImageEntry,
        info: ContainerInfo,
        on_started: Callable[[datetime.datetime], None],
    ) -> Run | None:
        """One run of `container` (init or main) in the sandbox, supervised to its end;
        None when the pod vanished or the agent stops. Raises EnvError or
        FileNotFoundError when it cannot be started."""
        spec = self.pod.get("spec", {})
        identity = self._identity(spec, container)
        launch = container_spec.build_launch(
            self.pod,
            container,
            entry,
            identity,
            self._dirs,
            info.restart_count,
            container_spec.source_lookup(self._ctx.kube),
            self._ctx.settings.work_dir,
        )
        started_at = _now()
        proc = sandbox.spawn(launch)
        self._pgid = proc.pid
        self._log(
            "pod.running",
            container=info.name,
            pid=proc.pid,
            argv=launch.argv,
            uid_run_as=identity.uid,
            containerID=info.container_id,
            restartCount=info.restart_count,
        )
        on_started(started_at)
        outcome = self._supervise(proc, spec, container)
        sandbox.kill_group(proc.pid, signal.SIGKILL)  # whatever it left behind
        self._pgid = None
        if outcome.killed_for in ("gone", "stop"):
            self._log("pod.killed", container=info.name, reason=outcome.killed_for)
            return None
        termination = self._termination(outcome, container, launch, started_at)
        return Run(info, termination, outcome.killed_for)

    def _run_main(self, spec: Mapping[str, Any], container: Json, entry: ImageEntry) -> None:
        policy = spec.get("restartPolicy", "Always")
        restart_count = 0
        last: Termination | None = None
        last_id = ""
        image = str(container.get("image", ""))
        name = str(container["name"])
        while not self._stopped():
            info = ContainerInfo(
                name,
                image,
                entry.image_id(),
                f"sba://{uuid.uuid4().hex}",
                restart_count,
                last,
                last_id,
            )
            try:
                run = self.run_container(container, entry, info, partial(self._started, info))
            except EnvError as err:
                self._report_waiting(name, image, "CreateContainerConfigError", str(err), "Pending")
                if self.pause(2.0):
                    continue
                return
            except FileNotFoundError as err:
                now = _now()
                termination = Termination(128, "StartError", str(err), now, now)
                self._finish(info, termination, "Failed", None)
                return
            if run is None:
                return
            termination = run.termination
            if should_restart(policy, run) and not self._deleting.is_set():
                self._log(
                    "pod.restarting", exitCode=termination.exit_code, reason=termination.reason
                )
                restart_count += 1
                last, last_id = termination, info.container_id
                self._sleep(backoff_seconds(restart_count))
                continue
            phase = (
                "Succeeded"
                if termination.exit_code == 0 and run.killed_for != "deadline"
                else "Failed"
            )
            self._finish(info, termination, phase, run.killed_for)
            return

    def _started(self, info: ContainerInfo, at: datetime.datetime) -> None:
        self.patch_status(
            running_status(
                info,
                started_at=at,
                start_time=self.start_time,
                now=at,
                existing_conditions=self.conditions(),
            )
        )
        if info.restart_count == 0:
            self.event(
                info.name, "Pulled", f'Container image "{info.image}" already present on machine'
            )
        self.event(info.name, "Started", f"Started container {info.name}")

    def _finish(
        self, info: ContainerInfo, termination: Termination, phase: str, killed_for: str | None
    ) -> None:
        deadline = killed_for == "deadline"
        self.patch_status(
            terminated_status(
                info,
                termination,
                phase=phase,
                start_time=self.start_time,
                now=_now(),
                existing_conditions=self.conditions(),
                reason="DeadlineExceeded" if deadline else "",
                message=DEADLINE_MESSAGE if deadline else "",
            )
        )
        self._log(
            "pod.succeeded" if phase == "Succeeded" else "pod.failed",
            exitCode=termination.exit_code,
            reason=termination.reason,
            message=termination.message[:200],
        )

    def _termination(
        self,
        outcome: Outcome,
        container: Mapping[str, Any],
        launch: sandbox.SandboxSpec,
        started_at: datetime.datetime,
    ) -> Termination:
        exit_code = exit_code_of(outcome.returncode)
        written = _read_head(self._dirs.termination_log, 4096)
        tail = _read_tail(launch.log_path, LOG_TAIL_BYTES)
        message = termination_message(
            written, container.get("terminationMessagePolicy"), exit_code, tail
        )
        reason = container_reason(
            exit_code,
            oom_killed=outcome.killed_for == "oom",
            deadline=outcome.killed_for == "deadline",
        )
        # Truncate the file so a restarted container starts with an empty message.
        self._dirs.termination_log.write_bytes(b"")
        return Termination(
            exit_code, reason, message, started_at, _now(), signal_of(outcome.returncode)
        )

    def _supervise(
        self, proc: subprocess.Popen[bytes], spec: Mapping[str, Any], container: Mapping[str, Any]
    ) -> Outcome:
        limits: Mapping[str, str] = (container.get("resources") or {}).get("limits") or {}
        memory_limit = memory_limit_bytes(limits)
        deadline_seconds = spec.get("activeDeadlineSeconds")
        deadline_at = (
            self.start_time + datetime.timedelta(seconds=int(deadline_seconds))
            if deadline_seconds is not None
            else None
        )
        default_grace = int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
        name = str(container["name"])
        killed_for: str | None = None
        kill_at: float | None = None
        next_memory_check = 0.0
        while True:
            returncode = proc.poll()
            if returncode is not None:
                return Outcome(returncode, killed_for)
            if self._stopped():
                sandbox.kill_group(proc.pid, signal.SIGKILL)
                return Outcome(proc.wait(), "stop" if self._ctx.stop.is_set() else "gone")
            mono = time.monotonic()
            if killed_for is None:
                if self._deleting.is_set():
                    grace = self.pod["metadata"].get("deletionGracePeriodSeconds", default_grace)
                    kill_at = self._terminate(proc, name, int(grace), "delete")
                    killed_for = "delete"
                elif deadline_at is not None and _now() >= deadline_at:
                    kill_at = self._terminate(proc, name, default_grace, "deadline")
                    killed_for = "deadline"
                elif memory_limit is not None and mono >= next_memory_check:
                    next_memory_check = mono + MEMORY_CHECK_INTERVAL
                    rss = sandbox.group_rss_bytes(proc.pid)
                    if rss > memory_limit:
                        self._log("pod.oom_kill", rss=rss, limit=memory_limit)
                        sandbox.kill_group(proc.pid, signal.SIGKILL)
                        killed_for, kill_at = "oom", mono
            elif kill_at is not None and mono >= kill_at:
                sandbox.kill_group(proc.pid, signal.SIGKILL)
                kill_at = None
            self._sleep(self._ctx.settings.poll_interval)

    def _terminate(self, proc: subprocess.Popen[bytes], name: str, grace: int, why: str) -> float:
        """SIGTERM the group now; returns when (monotonic) to follow up with SIGKILL."""
        self._log("pod.killing", container=name, reason=why, gracePeriodSeconds=grace)
        message = (
            f"Stopping container {name}"
            if why == "delete"
            else f"Container {name} exceeded the pod's activeDeadlineSeconds"
        )
        self.event(name, "Killing", message)
        if grace <= 0:
            sandbox.kill_group(proc.pid, signal.SIGKILL)
        else:
            sandbox.kill_group(proc.pid, signal.SIGTERM)
        return time.monotonic() + max(grace, 0)

    def _cleanup(self) -> None:
        if self._gone.is_set() or self._deleting.is_set():
            shutil.rmtree(self._dirs.scratch, ignore_errors=True)
        shutil.rmtree(self._dirs.run, ignore_errors=True)


def _read_head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _read_tail(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - size, 0))
            return fh.read()
    except OSError:
        return b""
