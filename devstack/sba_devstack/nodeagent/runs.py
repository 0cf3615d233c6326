"""How one run of a container ended, and whether its pod's restartPolicy reruns it."""

from __future__ import annotations

from dataclasses import dataclass

from sba_devstack.nodeagent.pod_status import ContainerInfo, Termination

MAX_RESTART_BACKOFF = 10.0
"""Far below the kubelet's 5 minutes: a dev cluster's tests should not wait on it."""


@dataclass(frozen=True)
class Run:
    info: ContainerInfo
    termination: Termination
    killed_for: str | None  # "delete" | "deadline" | "oom" | None (gone/stop end no run)


def should_restart(policy: str, run: Run, *, init: bool = False) -> bool:
    """A container the agent killed for deletion or the deadline stays dead; an init
    container that succeeded is done whatever the policy."""
    if run.killed_for not in (None, "oom"):
        return False
    failed = run.termination.exit_code != 0
    if init:
        return failed and policy in ("OnFailure", "Always")
    return policy == "Always" or (policy == "OnFailure" and failed)


def backoff_seconds(restarts: int) -> float:
    """Delay before restart number `restarts` (1-based), doubling as the kubelet's does."""
    return min(MAX_RESTART_BACKOFF, 0.5 * 2.0 ** min(restarts, 16))
