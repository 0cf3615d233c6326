"""The dev node's emptyDir path translation, and its init-container status documents."""

from __future__ import annotations

import datetime
from pathlib import Path

from sba_devstack.nodeagent.mounts import mount_table, translate, translate_env
from sba_devstack.nodeagent.pod_status import (
    ContainerInfo,
    Termination,
    init_status,
    initializing_status,
    status_patch,
)

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def test_paths_under_a_mount_become_the_volumes_directory() -> None:
    table = mount_table(
        [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "bin", "mountPath": "/sba/bin/"},
            {"name": "deep", "mountPath": "/sba/bin/deep"},
            {"name": "secret", "mountPath": "/etc/secret"},  # not an emptyDir: left alone
        ],
        {"tmp": Path("/s/volumes/tmp"), "bin": Path("/s/volumes/bin"), "deep": Path("/s/d")},
    )
    assert translate("/sba/bin/sba-step", table) == "/s/volumes/bin/sba-step"
    assert translate("/sba/bin/deep/x", table) == "/s/d/x"  # the longest mountPath wins
    assert translate("/tmp", table) == "/s/volumes/tmp"
    assert translate("/tmpfoo", table) == "/tmpfoo"
    assert translate("/etc/secret/token", table) == "/etc/secret/token"
    assert translate("word-stats", table) == "word-stats"


def test_only_the_pods_own_env_values_are_translated() -> None:
    table = mount_table([{"name": "tmp", "mountPath": "/tmp"}], {"tmp": Path("/s/tmp")})
    env = {"HOME": "/tmp", "PATH": "/tmp/clone/.venv/bin:/usr/bin", "LOG": "/tmp/node/log"}
    # The node's PATH and files stay host paths although they lie under /tmp.
    assert translate_env(env, ["HOME"], table) == {
        "HOME": "/s/tmp",
        "PATH": "/tmp/clone/.venv/bin:/usr/bin",
        "LOG": "/tmp/node/log",
    }


def test_init_container_statuses_follow_the_kubelets_shape() -> None:
    info = ContainerInfo("sba-entrypoint", "runtime", "runtime@sha256:x", "sba://1")
    running = init_status(info, {"running": {"startedAt": "2026-12-02T12:00:00Z"}})
    assert running["started"] is True
    assert running["ready"] is False
    pending = initializing_status(
        [running], "tool", "word-stats", waiting_for="sba-entrypoint", start_time=NOW, now=NOW
    )
    assert pending["phase"] == "Pending"
    initialized = next(c for c in pending["conditions"] if c["type"] == "Initialized")
    assert initialized["status"] == "False"
    assert initialized["reason"] == "ContainersNotInitialized"
    assert pending["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}

    done = init_status(info, Termination(0, "Completed", "", NOW, NOW).state("sba://1"))
    assert done["ready"] is True
    failed_init = init_status(info, Termination(1, "Error", "boom", NOW, NOW).state("sba://1"))
    failed = initializing_status(
        [failed_init],
        "tool",
        "word-stats",
        waiting_for="sba-entrypoint",
        start_time=NOW,
        now=NOW,
        phase="Failed",
    )
    assert failed["phase"] == "Failed"
    assert failed["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    # A patch switches an init container from running to terminated (nulls the other).
    patch = status_patch(failed)
    assert patch["initContainerStatuses"][0]["state"]["running"] is None
