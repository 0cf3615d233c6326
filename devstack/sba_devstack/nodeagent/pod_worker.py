"""One thread per Pod bound to this node: run its container and report its status.

The worker owns the pod from the moment the agent first sees it until the API deletes
it: it starts the container, reports Running, supervises the process (exit, deadline,
memory, deletion), reports the terminal status and, once the pod carries a
deletionTimestamp, kills what is left and removes the pod with grace 0 as a kubelet does.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sba_devstack.nodeagent import events, sandbox
from sba_devstack.nodeagent.container_env import EnvError, build_env, decode_secret, expand
from sba_devstack.nodeagent.images import ImageEntry, resolve_image
from sba_devstack.nodeagent.kube import API_ERRORS, STRATEGIC_MERGE, Json, Kube, KubeError
from sba_devstack.nodeagent.limits import derive_rlimits, memory_limit_bytes
from sba_devstack.nodeagent.logs import log
from sba_devstack.nodeagent.mounts import mount_table, translate, translate_env
from sba_devstack.nodeagent.pod_status import (
    DEADLINE_MESSAGE,
    ContainerInfo,
    Termination,
    container_reason,
    exit_code_of,
    init_status,
    initializing_status,
    k8s_time,
    running_status,
    signal_of,
    status_patch,
    terminated_status,
    termination_message,
    waiting_status,
)
from sba_devstack.nodeagent.settings import NodeAgentSettings

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_GRACE_SECONDS = 30
MEMORY_CHECK_INTERVAL = 0.5
LOG_TAIL_BYTES = 16384
MAX_RESTART_BACKOFF = 10.0
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
        """initContainerStatuses so far: every later status report carries them."""
        self._start_time = _parse_time(pod.get("status", {}).get("startTime")) or _now()
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

    # -- helpers ----------------------------------------------------------------------

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

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early for pod updates; callers re-check their conditions."""
        self._wake.wait(seconds)
        self._wake.clear()

    def _log(self, event: str, **fields: Any) -> None:
        log(event, pod=self._key, uid=self.uid, **fields)

    def _patch_status(self, status: Json) -> None:
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

    def _conditions(self) -> list[Json]:
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
            self._report_lost(spec)
            return
        if self._deleting.is_set():
            return
        containers = spec.get("containers") or []
        if len(containers) != 1:
            name = containers[0]["name"] if containers else "main"
            image = containers[0].get("image", "") if containers else ""
            self._report_waiting(
                name,
                image,
                "CreateContainerConfigError",
                "the sba node agent runs pods with one container (and any init containers)",
                phase="Failed",
            )
            return
        container: Json = containers[0]
        inits: list[tuple[Json, ImageEntry]] = []
        for init in spec.get("initContainers") or []:
            init_entry = self._resolve(pod, init, report_as=container)
            if init_entry is None:
                return
            inits.append((init, init_entry))
        entry = self._resolve(pod, container, report_as=container)
        if entry is None:
            return
        self._run_container(spec, container, entry, inits)

    def _resolve(self, pod: Json, container: Json, report_as: Json) -> ImageEntry | None:
        """The node's entry for `container`'s image; None (pod failed) when it has none."""
        image = str(container.get("image", ""))
        entry = resolve_image(image, self._ctx.settings.image_map)
        if entry is not None:
            return entry
        known = ", ".join(sorted(self._ctx.settings.image_map))
        message = (
            f'Failed to pull image "{image}": not available on node '
            f"{self._ctx.settings.node_name} (SBA_NODE_IMAGE_MAP knows: {known})"
        )
        self._report_waiting(
            report_as["name"], str(report_as.get("image", "")), "ErrImagePull", message, "Failed"
        )
        events.record(
            self._ctx.kube,
            pod,
            container["name"],
            self._ctx.settings.node_name,
            "Failed",
            message,
            "Warning",
        )
        return None

    def _report_lost(self, spec: Mapping[str, Any]) -> None:
        """A pod that was running before this agent started: its process is unknown."""
        containers = spec.get("containers") or [{"name": "main", "image": ""}]
        container = containers[0]
        now = _now()
        info = ContainerInfo(container["name"], container.get("image", ""), "", "")
        termination = Termination(
            137,
            "ContainerStatusUnknown",
            "The container could not be located when the pod was terminated",
            self._start_time,
            now,
        )
        self._patch_status(
            terminated_status(
                info,
                termination,
                phase="Failed",
                start_time=self._start_time,
                now=now,
                existing_conditions=self._conditions(),
            )
        )
        self._log("pod.failed", reason="ContainerStatusUnknown", exitCode=137)

    def _report_waiting(self, name: str, image: str, reason: str, message: str, phase: str) -> None:
        self._patch_status(
            waiting_status(
                name,
                image,
                reason=reason,
                message=message,
                phase=phase,
                start_time=self._start_time,
                now=_now(),
                existing_conditions=self._conditions(),
                pod_message=message if phase == "Failed" else "",
            )
        )
        self._log("pod.waiting", phase=phase, reason=reason, message=message)

    # -- running the container --------------------------------------------------------

    def _dirs(self) -> tuple[Path, Path, Path]:
        """(scratch dir owned by the sandbox user, root-only run dir, log dir)."""
        work = self._ctx.settings.work_dir
        return (
            work / "pods" / self.uid,
            work / "run" / self.uid,
            work / "logs" / f"{self.namespace}_{self.name}_{self.uid}",
        )

    def _prepare_scratch(self, spec: Mapping[str, Any], identity: sandbox.Identity) -> Path:
        scratch, run_dir, log_dir = self._dirs()
        for path in (run_dir, log_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        subdirs = [scratch, scratch / "home", scratch / "tmp", scratch / "volumes"]
        for volume in spec.get("volumes") or []:
            if "emptyDir" in volume:
                subdirs.append(scratch / "volumes" / volume["name"])
        for path in subdirs:
            path.mkdir(parents=True, exist_ok=True)
        (scratch / "termination-log").touch()
        if identity.uid is not None:
            for path in [*subdirs, scratch / "termination-log"]:
                os.chown(path, identity.uid, identity.gid if identity.gid is not None else -1)
        scratch.chmod(0o700)
        return scratch

    def _lookup(self, namespace: str, kind: str, name: str) -> Mapping[str, str] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        obj: Json | None = None
        for attempt in range(5):
            try:
                obj = self._ctx.kube.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
                break
            except KubeError as err:
                # The Node authorizer learns pod->secret edges asynchronously.
                if err.status != 403 or attempt == 4:
                    raise EnvError(f"cannot read {kind} {namespace}/{name}: {err}") from None
                time.sleep(0.2 * 2**attempt)
        if obj is None:
            return None
        data: dict[str, str] = dict(obj.get("data") or {})
        if kind == "secret":
            return decode_secret(data)
        return data

    def _mounts(
        self, spec: Mapping[str, Any], container: Mapping[str, Any], scratch: Path
    ) -> list[tuple[str, Path]]:
        volumes = {
            str(v["name"]): scratch / "volumes" / str(v["name"])
            for v in spec.get("volumes") or []
            if "emptyDir" in v
        }
        return mount_table(container.get("volumeMounts") or [], volumes)

    def _working_dir(
        self, container: Mapping[str, Any], mounts: list[tuple[str, Path]], scratch: Path
    ) -> str:
        wanted = str(container.get("workingDir") or "")
        if not wanted:
            return str(scratch / "home")
        translated = translate(wanted, mounts)
        return translated if Path(translated).is_dir() else str(scratch / "home")

    def _build_spec(
        self,
        spec: Mapping[str, Any],
        container: Mapping[str, Any],
        entry: ImageEntry,
        identity: sandbox.Identity,
        scratch: Path,
        attempt: int,
    ) -> sandbox.SandboxSpec:
        base = {
            "PATH": entry.search_path(),
            "HOSTNAME": self.name,
            "HOME": str(scratch / "home"),
            "TMPDIR": str(scratch / "tmp"),
            "SBA_TERMINATION_LOG": str(scratch / "termination-log"),
        }
        mounts = self._mounts(spec, container, scratch)
        env = build_env(self.pod, container, self._lookup, base)
        declared = [str(e.get("name")) for e in container.get("env") or []]
        env = translate_env(env, declared, mounts)
        argv = [expand(a, env) for a in container.get("command") or entry.entrypoint]
        argv += [expand(a, env) for a in container.get("args") or []]
        argv = [translate(a, mounts) for a in argv]
        if not argv:
            raise FileNotFoundError("no command given and the image has no entrypoint")
        executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
        if executable is None or not os.access(executable, os.X_OK):
            raise FileNotFoundError(f'exec: "{argv[0]}": executable file not found in $PATH')
        limits: Mapping[str, str] = (container.get("resources") or {}).get("limits") or {}
        deadline = spec.get("activeDeadlineSeconds")
        rlimits = derive_rlimits(limits, deadline, os.cpu_count() or 1)
        _, run_dir, log_dir = self._dirs()
        settings = self._ctx.settings
        needed = [p for p in entry.path.split(":") if p]
        needed += [os.path.realpath(executable), str(settings.work_dir), str(scratch)]
        interpreter = _shebang_interpreter(executable)
        if interpreter is not None:
            # A script (e.g. a venv console script) is useless if the sandbox user cannot
            # reach the interpreter its first line names.
            needed.append(os.path.realpath(interpreter))
        return sandbox.SandboxSpec(
            executable=executable,
            argv=argv,
            env=env,
            cwd=self._working_dir(container, mounts, scratch),
            identity=identity,
            rlimits=rlimits,
            log_path=log_dir / f"{container['name']}-{attempt}.log",
            spec_path=run_dir / "launch.json",
            stage_dir=run_dir / "stage",
            masks=sandbox.masks_for(needed, identity),
        )

    def _identity(self, spec: Mapping[str, Any], container: Mapping[str, Any]) -> sandbox.Identity:
        return sandbox.resolve_identity(
            spec.get("securityContext") or {},
            container.get("securityContext") or {},
            self._ctx.settings.sandbox_user,
            self._ctx.agent_is_root,
        )

    def _run_container(
        self,
        spec: Mapping[str, Any],
        container: Json,
        entry: ImageEntry,
        inits: Sequence[tuple[Json, ImageEntry]] = (),
    ) -> None:
        identity = self._identity(spec, container)
        scratch = self._prepare_scratch(spec, identity)
        if inits and not self._run_inits(spec, container, inits, scratch):
            return
        policy = spec.get("restartPolicy", "Always")
        restart_count = 0
        last: Termination | None = None
        last_id = ""
        image = str(container.get("image", ""))
        name = str(container["name"])
        node = self._ctx.settings.node_name
        while not self._stopped():
            container_id = f"sba://{uuid.uuid4().hex}"
            info = ContainerInfo(
                name, image, entry.image_id(), container_id, restart_count, last, last_id
            )
            try:
                launch = self._build_spec(spec, container, entry, identity, scratch, restart_count)
            except EnvError as err:
                self._report_waiting(name, image, "CreateContainerConfigError", str(err), "Pending")
                self._sleep(2.0)
                if self._deleting.is_set():
                    return
                continue
            except FileNotFoundError as err:
                now = _now()
                termination = Termination(128, "StartError", str(err), now, now)
                outcome_phase = "Failed"
                self._finish(info, termination, outcome_phase, None)
                return
            started_at = _now()
            proc = sandbox.spawn(launch)
            self._pgid = proc.pid
            self._log(
                "pod.running",
                pid=proc.pid,
                argv=launch.argv,
                uid_run_as=identity.uid,
                containerID=container_id,
                restartCount=restart_count,
            )
            self._patch_status(
                running_status(
                    info,
                    started_at=started_at,
                    start_time=self._start_time,
                    now=started_at,
                    existing_conditions=self._conditions(),
                )
            )
            if restart_count == 0:
                events.record(
                    self._ctx.kube,
                    self.pod,
                    name,
                    node,
                    "Pulled",
                    f'Container image "{image}" already present on machine',
                )
            events.record(
                self._ctx.kube, self.pod, name, node, "Started", f"Started container {name}"
            )
            outcome = self._supervise(proc, spec, container)
            sandbox.kill_group(proc.pid, signal.SIGKILL)  # whatever it left behind
            self._pgid = None
            if outcome.killed_for in ("gone", "stop"):
                self._log("pod.killed", reason=outcome.killed_for)
                return
            termination = self._termination(outcome, container, launch, scratch, started_at)
            restart = (outcome.killed_for is None or outcome.killed_for == "oom") and (
                policy == "Always" or (policy == "OnFailure" and termination.exit_code != 0)
            )
            if restart and not self._deleting.is_set():
                self._log(
                    "pod.restarting", exitCode=termination.exit_code, reason=termination.reason
                )
                restart_count += 1
                last, last_id = termination, container_id
                self._sleep(min(MAX_RESTART_BACKOFF, 0.5 * 2**restart_count))
                continue
            phase = (
                "Succeeded"
                if termination.exit_code == 0 and outcome.killed_for != "deadline"
                else "Failed"
            )
            self._finish(info, termination, phase, outcome.killed_for)
            return

    def _run_inits(
        self,
        spec: Mapping[str, Any],
        main: Mapping[str, Any],
        inits: Sequence[tuple[Json, ImageEntry]],
        scratch: Path,
    ) -> bool:
        """Run each init container to completion, in order; False when the pod ends here.

        A failed init container fails the pod (the restartPolicy Never of tool Jobs; the
        kubelet would restart it under OnFailure/Always, which no pod here asks for).
        """
        main_name, main_image = str(main["name"]), str(main.get("image", ""))
        node = self._ctx.settings.node_name
        for init, entry in inits:
            name, image = str(init["name"]), str(init.get("image", ""))
            container_id = f"sba://{uuid.uuid4().hex}"
            info = ContainerInfo(name, image, entry.image_id(), container_id)
            try:
                launch = self._build_spec(spec, init, entry, self._identity(spec, init), scratch, 0)
            except (EnvError, FileNotFoundError) as err:
                now = _now()
                failed = Termination(128, "StartError", str(err), now, now)
                self._init_statuses.append(init_status(info, failed.state(container_id)))
                self._report_init_failed(main_name, main_image, name, failed)
                return False
            started_at = _now()
            proc = sandbox.spawn(launch)
            self._pgid = proc.pid
            self._log("pod.init_running", container=name, pid=proc.pid, argv=launch.argv)
            running = init_status(info, {"running": {"startedAt": k8s_time(started_at)}})
            self._patch_status(
                initializing_status(
                    [*self._init_statuses, running],
                    main_name,
                    main_image,
                    waiting_for=name,
                    start_time=self._start_time,
                    now=started_at,
                    existing_conditions=self._conditions(),
                )
            )
            events.record(
                self._ctx.kube, self.pod, name, node, "Started", f"Started container {name}"
            )
            outcome = self._supervise(proc, spec, init)
            sandbox.kill_group(proc.pid, signal.SIGKILL)
            self._pgid = None
            if outcome.killed_for in ("gone", "stop"):
                self._log("pod.killed", reason=outcome.killed_for)
                return False
            termination = self._termination(outcome, init, launch, scratch, started_at)
            self._init_statuses.append(init_status(info, termination.state(container_id)))
            if termination.exit_code != 0 or outcome.killed_for is not None:
                self._report_init_failed(main_name, main_image, name, termination)
                return False
            self._log("pod.init_completed", container=name)
        return True

    def _report_init_failed(
        self, main_name: str, main_image: str, name: str, termination: Termination
    ) -> None:
        self._patch_status(
            initializing_status(
                self._init_statuses,
                main_name,
                main_image,
                waiting_for=name,
                start_time=self._start_time,
                now=_now(),
                existing_conditions=self._conditions(),
                phase="Failed",
            )
        )
        self._log(
            "pod.failed",
            initContainer=name,
            exitCode=termination.exit_code,
            reason=termination.reason,
            message=termination.message[:200],
        )

    def _finish(
        self, info: ContainerInfo, termination: Termination, phase: str, killed_for: str | None
    ) -> None:
        deadline = killed_for == "deadline"
        self._patch_status(
            terminated_status(
                info,
                termination,
                phase=phase,
                start_time=self._start_time,
                now=_now(),
                existing_conditions=self._conditions(),
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
        scratch: Path,
        started_at: datetime.datetime,
    ) -> Termination:
        exit_code = exit_code_of(outcome.returncode)
        written = _read_head(scratch / "termination-log", 4096)
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
        (scratch / "termination-log").write_bytes(b"")
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
            self._start_time + datetime.timedelta(seconds=int(deadline_seconds))
            if deadline_seconds is not None
            else None
        )
        default_grace = int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
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
                    killed_for, kill_at = "delete", self._terminate(proc, int(grace), "delete")
                elif deadline_at is not None and _now() >= deadline_at:
                    killed_for, kill_at = (
                        "deadline",
                        self._terminate(proc, default_grace, "deadline"),
                    )
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

    def _terminate(self, proc: subprocess.Popen[bytes], grace: int, why: str) -> float:
        """SIGTERM the group now; returns when (monotonic) to follow up with SIGKILL."""
        self._log("pod.killing", reason=why, gracePeriodSeconds=grace)
        pod = self.pod
        name = pod["spec"]["containers"][0]["name"]
        message = (
            f"Stopping container {name}"
            if why == "delete"
            else f"Container {name} exceeded the pod's activeDeadlineSeconds"
        )
        events.record(self._ctx.kube, pod, name, self._ctx.settings.node_name, "Killing", message)
        if grace <= 0:
            sandbox.kill_group(proc.pid, signal.SIGKILL)
        else:
            sandbox.kill_group(proc.pid, signal.SIGTERM)
        return time.monotonic() + max(grace, 0)

    def _cleanup(self) -> None:
        scratch, run_dir, _ = self._dirs()
        if self._gone.is_set() or self._deleting.is_set():
            shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


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


def _shebang_interpreter(executable: str) -> str | None:
    """The absolute interpreter path on a script's `#!` line, if it has one."""
    try:
        with open(executable, "rb") as script:
            first = script.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return parts[0] if parts and parts[0].startswith("/") else None
