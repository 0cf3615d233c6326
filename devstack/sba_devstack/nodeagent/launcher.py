"""Runs between the agent and a container's command: `python -I -S launcher.py SPEC.json`.

Stdlib only and run in isolated mode, so it starts fast and imports nothing of ours.
As root it may hide directories the sandbox user cannot traverse behind a tmpfs in a
private mount namespace (re-exposing only what the image needs, e.g. the Python
install under /root/.pyenv), then sets rlimits, no_new_privs, drops to the container's
uid/gid, asks to be killed when the agent dies, and execs the command in place, so the
pid the agent holds is the container's main process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
EXIT_LAUNCH_FAILED = 128


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    def enc(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    result = libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {source} -> {target}")


def _apply_masks(libc: Any, masks: list[dict[str, Any]], stage_dir: str) -> None:
    """Hide each mask's `dir` under a tmpfs, keeping only its `keep` children."""
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
    for i, mask in enumerate(masks):
        staged: list[tuple[str, str]] = []
        for j, child in enumerate(mask["keep"]):
            stage = os.path.join(stage_dir, f"{i}-{j}")
            os.makedirs(stage, exist_ok=True)
            _mount(libc, os.path.join(mask["dir"], child), stage, None, MS_BIND | MS_REC, None)
            staged.append((child, stage))
        _mount(libc, "tmpfs", mask["dir"], "tmpfs", 0, "mode=0755,size=1m")
        for child, stage in staged:
            target = os.path.join(mask["dir"], child)
            os.makedirs(target, exist_ok=True)
            _mount(libc, stage, target, None, MS_MOVE, None)


def launch(spec: dict[str, Any]) -> None:
    libc = _libc()
    for name, value in spec.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if spec.get("masks"):
        _apply_masks(libc, spec["masks"], spec["stage_dir"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    parent = os.getppid()
    if spec.get("uid") is not None:
        os.setgroups(spec.get("groups", []))
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    # Set after the uid change, which would clear it.
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if os.getppid() != parent:
        raise SystemExit("node agent went away before the container started")
    os.umask(0o022)
    os.chdir(spec["cwd"])
    os.execve(spec["executable"], spec["argv"], spec["env"])


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        launch(spec)
    except (OSError, SystemExit) as err:
        sys.stderr.write(f"sba-node-agent: failed to start container: {err}\n")
        sys.stderr.flush()
        os._exit(EXIT_LAUNCH_FAILED)


if __name__ == "__main__":
    main()
