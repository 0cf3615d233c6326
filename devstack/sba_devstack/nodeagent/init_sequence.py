"""A pod's init containers, run to completion one after another before its main one.

Reported as the kubelet reports them: while one runs or backs off the pod is Pending
with Initialized=False and the main container waits `PodInitializing`; one that fails
under restartPolicy Never fails the pod (the main container never starts); under
OnFailure/Always it is restarted in place with a backoff (CrashLoopBackOff meanwhile).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

from sba_devstack.nodeagent.container_env import EnvError
from sba_devstack.nodeagent.images import ImageEntry
from sba_devstack.nodeagent.pod_status import (
    DEADLINE_MESSAGE,
    ContainerInfo,
    Json,
    Termination,
    init_status,
    initializing_status,
    k8s_time,
    waiting_container,
)
from sba_devstack.nodeagent.runs import Run, backoff_seconds, should_restart

CONFIG_RETRY_SECONDS = 2.0


class InitHost(Protocol):
    """What the sequence needs from its pod's worker."""

    @property
    def start_time(self) -> datetime.datetime: ...

    def run_container(
        self,
        container: Json,
        entry: ImageEntry,
        info: ContainerInfo,
        on_started: Callable[[datetime.datetime], None],
    ) -> Run | None:
        """Run it to its end; None if the pod vanished or the agent stops. Raises
        EnvError or FileNotFoundError when it cannot be started."""
        ...

    def patch_status(self, status: Json) -> None: ...

    def conditions(self) -> list[Json]: ...

    def pause(self, seconds: float) -> bool:
        """Wait; False (at once) when the pod is being deleted or the agent stops."""
        ...

    def deleting(self) -> bool: ...

    def event(self, container: str, reason: str, message: str, kind: str = "Normal") -> None: ...

    def log(self, event: str, **fields: Any) -> None: ...


def pending_statuses(inits: Sequence[Mapping[str, Any]]) -> list[Json]:
    """Every init container as not yet run, as the kubelet lists them from the start."""
    return [
        waiting_container(str(c["name"]), str(c.get("image", "")), "PodInitializing") for c in inits
    ]


class InitSequence:
    def __init__(
        self,
        host: InitHost,
        inits: Sequence[tuple[Json, ImageEntry]],
        main: Mapping[str, Any],
        policy: str,
        pod_ref: str,
    ) -> None:
        self._host = host
        self._inits = inits
        self._main_name = str(main["name"])
        self._main_image = str(main.get("image", ""))
        self._policy = policy
        self._pod_ref = pod_ref  # as the kubelet names pods in messages: name_ns(uid)
        self.statuses = pending_statuses([c for c, _ in inits])
        """initContainerStatuses, in spec order; the worker reports them from then on."""

    def run(self) -> bool:
        """True when every init container completed; False when the pod ends here."""
        return all(self._run_one(i, init, entry) for i, (init, entry) in enumerate(self._inits))

    def _run_one(self, index: int, init: Json, entry: ImageEntry) -> bool:
        host = self._host
        name, image = str(init["name"]), str(init.get("image", ""))
        restarts, last, last_id = 0, None, ""
        while True:
            container_id = f"sba://{uuid.uuid4().hex}"
            info = ContainerInfo(
                name, image, entry.image_id(), container_id, restarts, last, last_id
            )
            try:
                run = host.run_container(init, entry, info, partial(self._started, index, info))
            except EnvError as err:
                # The kubelet keeps retrying: the Secret or ConfigMap may appear.
                self._set(
                    index,
                    info,
                    {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)}},
                )
                self._report("Pending")
                if host.pause(CONFIG_RETRY_SECONDS):
                    continue
                return self._abandon()
            except FileNotFoundError as err:
                now = datetime.datetime.now(datetime.UTC)
                run = Run(info, Termination(128, "StartError", str(err), now, now), None)
            if run is None:
                return False
            termination = run.termination
            self._set(index, info, termination.state(container_id))
            if termination.exit_code == 0 and run.killed_for is None:
                host.log("pod.init_completed", container=name)
                return True
            if not should_restart(self._policy, run, init=True) or host.deleting():
                deadline = run.killed_for == "deadline"
                self._report(
                    "Failed",
                    "DeadlineExceeded" if deadline else "",
                    DEADLINE_MESSAGE if deadline else "",
                )
                host.log(
                    "pod.failed",
                    initContainer=name,
                    exitCode=termination.exit_code,
                    reason=termination.reason,
                    message=termination.message[:200],
                )
                return False
            restarts, last, last_id = restarts + 1, termination, container_id
            delay = backoff_seconds(restarts)
            backing_off = ContainerInfo(
                name, image, entry.image_id(), container_id, restarts, last, last_id
            )
            message = f"back-off {delay:g}s restarting failed container={name} pod={self._pod_ref}"
            self._set(
                index, backing_off, {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            )
            self._report("Pending")
            host.event(
                name,
                "BackOff",
                f"Back-off restarting failed container {name} in pod {self._pod_ref}",
                "Warning",
            )
            host.log("pod.init_restarting", container=name, exitCode=termination.exit_code)
            if not host.pause(delay):
                return self._abandon()

    def _started(self, index: int, info: ContainerInfo, at: datetime.datetime) -> None:
        self._set(index, info, {"running": {"startedAt": k8s_time(at)}})
        self._report("Pending", now=at)
        if info.restart_count == 0:
            self._host.event(
                info.name, "Pulled", f'Container image "{info.image}" already present on machine'
            )
        self._host.event(info.name, "Started", f"Started container {info.name}")

    def _abandon(self) -> bool:
        """Deleted (or the agent stops) between runs: nothing left to kill."""
        if self._host.deleting():
            self._report("Failed")
        return False

    def _set(self, index: int, info: ContainerInfo, state: Json) -> None:
        self.statuses[index] = init_status(info, state)

    def _report(
        self, phase: str, reason: str = "", message: str = "", now: datetime.datetime | None = None
    ) -> None:
        self._host.patch_status(
            initializing_status(
                self.statuses,
                self._main_name,
                self._main_image,
                start_time=self._host.start_time,
                now=now or datetime.datetime.now(datetime.UTC),
                existing_conditions=self._host.conditions(),
                phase=phase,
                reason=reason,
                message=message,
            )
        )
