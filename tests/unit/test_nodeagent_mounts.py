"""The dev node's translation of emptyDir container paths to the volumes' host dirs."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sba_devstack.nodeagent.container_spec import PodDirs, build_launch
from sba_devstack.nodeagent.images import ImageEntry
from sba_devstack.nodeagent.mounts import mount_table, translate, translate_env
from sba_devstack.nodeagent.sandbox import Identity

SCRATCH = Path("/s")


def test_paths_under_a_mount_become_the_volumes_directory() -> None:
    table = mount_table(
        [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "bin", "mountPath": "/sba/bin/"},
            {"name": "deep", "mountPath": "/sba/bin/deep"},
            {"name": "secret", "mountPath": "/etc/secret"},  # not an emptyDir: left alone
        ],
        {"tmp", "bin", "deep"},
        SCRATCH,
    )
    assert translate("/sba/bin/sba-step", table) == "/s/volumes/bin/sba-step"
    assert translate("/sba/bin/deep/x", table) == "/s/volumes/deep/x"  # longest mount wins
    assert translate("/sba/bin", table) == "/s/volumes/bin"
    assert translate("/tmp", table) == "/s/volumes/tmp"
    assert translate("/tmpfoo", table) == "/tmpfoo"
    assert translate("/etc/secret/token", table) == "/etc/secret/token"
    assert translate("word-stats", table) == "word-stats"
    assert translate("echo hi > /tmp/x", table) == "echo hi > /tmp/x"  # whole values only


def test_mounts_of_unknown_volumes_or_the_root_are_ignored() -> None:
    table = mount_table(
        [{"name": "gone", "mountPath": "/x"}, {"name": "root", "mountPath": "/"}],
        {"root"},
        SCRATCH,
    )
    assert table == []
    assert translate("/x/y", table) == "/x/y"


def test_only_the_named_env_values_are_translated() -> None:
    table = mount_table([{"name": "tmp", "mountPath": "/tmp"}], {"tmp"}, SCRATCH)
    env = {"HOME": "/tmp", "PATH": "/tmp/clone/.venv/bin:/usr/bin", "LOG": "/tmp/node/log"}
    assert translate_env(env, ["HOME", "MISSING"], table) == {
        "HOME": "/s/volumes/tmp",
        "PATH": "/tmp/clone/.venv/bin:/usr/bin",
        "LOG": "/tmp/node/log",
    }


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _pod(container: dict[str, Any], volumes: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {
            "containers": [container],
            "volumes": [{"name": v, "emptyDir": {}} for v in volumes],
        },
    }


def _no_sources(namespace: str, kind: str, name: str) -> Mapping[str, str] | None:
    return {"path": "/sba/bin/conf"}


def test_launch_translates_what_the_pod_wrote_but_not_the_nodes_own_paths(
    tmp_path: Path,
) -> None:
    # The node's work dir under /tmp-like mountPath: its HOME/TMPDIR must stay host paths.
    work = tmp_path / "tmp" / "node"
    dirs = PodDirs.of(work, "ns", "p", "u1")
    _executable(dirs.scratch / "volumes" / "sba-bin" / "sba-step")
    (dirs.scratch / "volumes" / "sba-bin" / "cwd").mkdir()
    mount_path = str(tmp_path / "tmp")
    container = {
        "name": "tool",
        "image": "user/tool:1",
        "command": ["/sba/bin/sba-step", "--", "run", "/sba/bin/data", "$(OUT)/x"],
        "args": ["--home=/sba/bin"],
        "workingDir": "/sba/bin/cwd",
        "env": [
            {"name": "HOME", "value": mount_path},
            {"name": "OUT", "value": "/sba/bin/out"},
            {"name": "CACHE", "value": "$(TMPDIR)/cache"},
            {"name": "CONF", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "path"}}},
        ],
        "volumeMounts": [
            {"name": "sba-bin", "mountPath": "/sba/bin", "readOnly": True},
            {"name": "tmp", "mountPath": mount_path},
        ],
    }
    launch = build_launch(
        _pod(container, ["sba-bin", "tmp"]),
        container,
        ImageEntry("user/tool", "/usr/bin"),
        Identity(None, None),
        dirs,
        0,
        _no_sources,
        work,
    )
    volumes = dirs.scratch / "volumes"
    assert launch.executable == str(volumes / "sba-bin" / "sba-step")
    assert launch.argv == [
        str(volumes / "sba-bin" / "sba-step"),
        "--",
        "run",
        str(volumes / "sba-bin" / "data"),
        f"{volumes}/sba-bin/out/x",  # expanded from the translated OUT
        "--home=/sba/bin",  # not a path argument: left as the pod wrote it
    ]
    assert launch.cwd == str(volumes / "sba-bin" / "cwd")
    assert launch.env["HOME"] == str(volumes / "tmp")
    assert launch.env["CONF"] == str(volumes / "sba-bin" / "conf")
    # The node's own values under the mountPath are not the pod's paths.
    assert launch.env["TMPDIR"] == str(dirs.scratch / "tmp")
    assert launch.env["CACHE"] == f"{dirs.scratch}/tmp/cache"
    assert launch.env["SBA_TERMINATION_LOG"] == str(dirs.termination_log)
    assert launch.log_path == dirs.logs / "tool-0.log"


def test_a_relative_command_is_looked_up_on_the_images_path(tmp_path: Path) -> None:
    dirs = PodDirs.of(tmp_path, "ns", "p", "u1")
    _executable(tmp_path / "image" / "sba-step")
    container = {
        "name": "sba-entrypoint",
        "command": ["sba-step", "install", "/sba/bin/sba-step"],
        "volumeMounts": [{"name": "sba-bin", "mountPath": "/sba/bin"}],
    }
    launch = build_launch(
        _pod(container, ["sba-bin"]),
        container,
        ImageEntry("runtime", str(tmp_path / "image")),
        Identity(None, None),
        dirs,
        2,
        _no_sources,
        tmp_path,
    )
    assert launch.executable == str(tmp_path / "image" / "sba-step")
    assert launch.argv[2] == str(dirs.scratch / "volumes" / "sba-bin" / "sba-step")
    assert launch.cwd == str(dirs.scratch / "home")  # no such dir: falls back to HOME
    assert launch.log_path == dirs.logs / "sba-entrypoint-2.log"
