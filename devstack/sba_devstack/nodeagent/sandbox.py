"""Spawning, watching and killing a container's process group on the host.

Each container runs in its own session (pgid == pid) through launcher.py, which applies
the sandbox (uid/gid, rlimits, no_new_privs, mount masks) before exec'ing the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launcher.py")
NOBODY = 65534
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Identity:
    """Who the container runs as; uid None means "as the agent itself" (non-root agent)."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Mask:
    """Hide `dir` behind a tmpfs except for its children named in `keep`."""

    dir: str
    keep: tuple[str, ...]


@dataclass(frozen=True)
class SandboxSpec:
    executable: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    identity: Identity
    rlimits: Mapping[str, int]
    log_path: Path
    spec_path: Path
    stage_dir: Path
    masks: tuple[Mask, ...] = field(default=())

    def launcher_spec(self) -> dict[str, Any]:
        return {
            "executable": self.executable,
            "argv": self.argv,
            "env": self.env,
            "cwd": self.cwd,
            "uid": self.identity.uid,
            "gid": self.identity.gid,
            "groups": list(self.identity.groups),
            "rlimits": dict(self.rlimits),
            "masks": [{"dir": m.dir, "keep": list(m.keep)} for m in self.masks],
            "stage_dir": str(self.stage_dir),
        }


def resolve_identity(
    pod_security: Mapping[str, Any],
    container_security: Mapping[str, Any],
    fallback_user: str,
    agent_is_root: bool,
) -> Identity:
    """runAsUser/runAsGroup (container over pod), else `fallback_user`; extra groups from
    fsGroup and supplementalGroups. A non-root agent cannot switch users at all."""
    if not agent_is_root:
        return Identity(None, None)

    def pick(key: str) -> int | None:
        value = container_security.get(key, pod_security.get(key))
        return int(value) if value is not None else None

    uid = pick("runAsUser")
    gid = pick("runAsGroup")
    if uid is None:
        uid, default_gid = lookup_user(fallback_user)
    else:
        try:
            default_gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            default_gid = NOBODY
    groups = [int(g) for g in pod_security.get("supplementalGroups") or []]
    if pod_security.get("fsGroup") is not None:
        groups.append(int(pod_security["fsGroup"]))
    return Identity(uid, gid if gid is not None else default_gid, tuple(dict.fromkeys(groups)))


def lookup_user(user: str) -> tuple[int, int]:
    """`name` or `uid[:gid]` -> (uid, gid)."""
    if user.replace(":", "").isdigit():
        uid_text, _, gid_text = user.partition(":")
        return int(uid_text), int(gid_text) if gid_text else int(uid_text)
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _traversable(path: Path, identity: Identity) -> bool:
    st = path.stat()
    if identity.uid == st.st_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == identity.gid or st.st_gid in identity.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def masks_for(paths: Iterable[str], identity: Identity) -> tuple[Mask, ...]:
    """For each path, the first ancestor the sandbox user cannot traverse becomes a mask
    keeping the child on the way to the path. Only one blocked level per path is handled."""
    if identity.uid is None or identity.uid == 0:
        return ()
    keep: dict[str, list[str]] = {}
    for raw in paths:
        try:
            real = Path(raw).resolve()
        except OSError:
            continue
        parts = real.parts
        for depth in range(1, len(parts)):
            ancestor = Path(*parts[:depth])
            try:
                ok = _traversable(ancestor, identity)
            except OSError:
                break
            if not ok:
                children = keep.setdefault(str(ancestor), [])
                if parts[depth] not in children:
                    children.append(parts[depth])
                break
    return tuple(Mask(d, tuple(children)) for d, children in keep.items())


def spawn(spec: SandboxSpec) -> subprocess.Popen[bytes]:
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(spec.spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(spec.launcher_spec(), fh)
    with spec.log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", str(LAUNCHER), str(spec.spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={},
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal the whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(entry.path, "stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            # fields[0] is state, fields[2] the process group; zombies hold no memory.
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def group_rss_bytes(pgid: int) -> int:
    total = 0
    for pid in group_members(pgid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total
