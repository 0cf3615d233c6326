"""How one container of a pod is launched: its files on the host and its sandbox spec.

Init containers and the main container share the pod's scratch dir (home, tmp, the
emptyDir volumes, the termination log); each run gets its own `<name>-<attempt>.log`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sba_devstack.nodeagent import sandbox
from sba_devstack.nodeagent.container_env import (
    EnvError,
    SourceLookup,
    build_env,
    decode_secret,
    expand,
)
from sba_devstack.nodeagent.images import ImageEntry
from sba_devstack.nodeagent.kube import Json, Kube, KubeError
from sba_devstack.nodeagent.limits import derive_rlimits
from sba_devstack.nodeagent.mounts import (
    MountTable,
    mount_table,
    translate,
    translate_env,
    volume_dir,
)


@dataclass(frozen=True)
class PodDirs:
    """A pod's directories on the node."""

    scratch: Path  # owned by the sandbox user
    run: Path  # root-only: launch spec, mask staging
    logs: Path

    @classmethod
    def of(cls, work_dir: Path, namespace: str, name: str, uid: str) -> PodDirs:
        return cls(
            work_dir / "pods" / uid,
            work_dir / "run" / uid,
            work_dir / "logs" / f"{namespace}_{name}_{uid}",
        )

    @property
    def termination_log(self) -> Path:
        return self.scratch / "termination-log"


def source_lookup(kube: Kube) -> SourceLookup:
    """Secrets and ConfigMaps for env/envFrom, read with the node's credentials."""

    def lookup(namespace: str, kind: str, name: str) -> Mapping[str, str] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        obj: Json | None = None
        for attempt in range(5):
            try:
                obj = kube.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
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

    return lookup


def emptydirs(spec: Mapping[str, Any]) -> set[str]:
    return {str(v["name"]) for v in spec.get("volumes") or [] if "emptyDir" in v}


def prepare(dirs: PodDirs, spec: Mapping[str, Any], identity: sandbox.Identity) -> None:
    for path in (dirs.run, dirs.logs):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = dirs.scratch
    subdirs = [scratch, scratch / "home", scratch / "tmp", scratch / "volumes"]
    subdirs += [volume_dir(scratch, name) for name in sorted(emptydirs(spec))]
    for path in subdirs:
        path.mkdir(parents=True, exist_ok=True)
    dirs.termination_log.touch()
    if identity.uid is not None:
        for path in [*subdirs, dirs.termination_log]:
            os.chown(path, identity.uid, identity.gid if identity.gid is not None else -1)
    scratch.chmod(0o700)


def _translate_literals(container: Mapping[str, Any], mounts: MountTable) -> dict[str, Any]:
    """`container` with its command, args and literal env values translated."""
    own = dict(container)
    for key in ("command", "args"):
        if own.get(key):
            own[key] = [translate(str(a), mounts) for a in own[key]]
    own["env"] = [
        {**var, "value": translate(str(var["value"]), mounts)} if "value" in var else var
        for var in container.get("env") or []
    ]
    return own


def _working_dir(container: Mapping[str, Any], mounts: MountTable, scratch: Path) -> str:
    wanted = str(container.get("workingDir") or "")
    if not wanted:
        return str(scratch / "home")
    translated = translate(wanted, mounts)
    return translated if Path(translated).is_dir() else str(scratch / "home")


def build_launch(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    entry: ImageEntry,
    identity: sandbox.Identity,
    dirs: PodDirs,
    attempt: int,
    lookup: SourceLookup,
    work_dir: Path,
) -> sandbox.SandboxSpec:
    """Raises EnvError (CreateContainerConfigError) or FileNotFoundError (StartError)."""
    spec: Mapping[str, Any] = pod.get("spec", {})
    scratch = dirs.scratch
    base = {
        "PATH": entry.search_path(),
        "HOSTNAME": str(pod["metadata"]["name"]),
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "SBA_TERMINATION_LOG": str(dirs.termination_log),
    }
    mounts = mount_table(container.get("volumeMounts") or [], emptydirs(spec), scratch)
    # Only what the pod wrote is translated, before `$(VAR)` expansion: the node's own
    # values (base env, the image's entrypoint) are host paths even under a mountPath.
    own = _translate_literals(container, mounts)
    env = build_env(pod, own, lookup, base)
    literal = {str(v["name"]) for v in own.get("env") or [] if "valueFrom" not in v}
    sourced = [k for k, v in env.items() if k not in literal and v != base.get(k)]
    env = translate_env(env, sourced, mounts)
    argv = [expand(a, env) for a in own.get("command") or entry.entrypoint]
    argv += [expand(a, env) for a in own.get("args") or []]
    if not argv:
        raise FileNotFoundError("no command given and the image has no entrypoint")
    executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
    if executable is None or not os.access(executable, os.X_OK):
        raise FileNotFoundError(f'exec: "{argv[0]}": executable file not found in $PATH')
    limits: Mapping[str, str] = (container.get("resources") or {}).get("limits") or {}
    deadline = spec.get("activeDeadlineSeconds")
    rlimits = derive_rlimits(limits, deadline, os.cpu_count() or 1)
    needed = [p for p in entry.path.split(":") if p]
    # The executable itself, not just its image's PATH: it may be a translated path in an
    # emptyDir (put there by an init container); masks_for opens every ancestor of it.
    needed += [os.path.realpath(executable), str(work_dir), str(scratch)]
    interpreter = _shebang_interpreter(executable)
    if interpreter is not None:
        # A script (e.g. a venv console script) is useless if the sandbox user cannot
        # reach the interpreter its first line names.
        needed.append(os.path.realpath(interpreter))
    return sandbox.SandboxSpec(
        executable=executable,
        argv=argv,
        env=env,
        cwd=_working_dir(container, mounts, scratch),
        identity=identity,
        rlimits=rlimits,
        log_path=dirs.logs / f"{container['name']}-{attempt}.log",
        spec_path=dirs.run / "launch.json",
        stage_dir=dirs.run / "stage",
        masks=sandbox.masks_for(needed, identity),
    )


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
