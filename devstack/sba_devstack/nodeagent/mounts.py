"""Container paths under an emptyDir's mountPath, as host paths of the volume's directory.

The sandbox does not remap the filesystem: a container that writes `/work/x` under a
`volumeMounts: [{name: work, mountPath: /work}]` must write `<scratch>/volumes/work/x`.
Commands, args, env values and the working directory are translated; the longest
matching mountPath wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def mount_table(
    volume_mounts: Iterable[Mapping[str, Any]], volume_dirs: Mapping[str, Path]
) -> list[tuple[str, Path]]:
    """(mountPath, host dir) for each mount of a known volume, longest mountPath first."""
    table = []
    for mount in volume_mounts:
        path = str(mount.get("mountPath", "")).rstrip("/")
        host = volume_dirs.get(str(mount.get("name", "")))
        if path and host is not None:
            table.append((path, host))
    return sorted(table, key=lambda item: len(item[0]), reverse=True)


def translate(value: str, table: Sequence[tuple[str, Path]]) -> str:
    """`value` with a leading mountPath replaced by the volume's host directory."""
    for path, host in table:
        if value == path or value.startswith(path + "/"):
            return str(host) + value[len(path) :]
    return value


def translate_env(
    env: Mapping[str, str], declared: Iterable[str], table: Sequence[tuple[str, Path]]
) -> dict[str, str]:
    """`env` with the pod's own (`declared`) values translated. The node's values (PATH,
    SBA_TERMINATION_LOG, ...) are host paths, even when they fall under a mount's path
    (a venv or work dir under /tmp with an emptyDir mounted at /tmp)."""
    names = set(declared)
    return {k: translate(v, table) if k in names else v for k, v in env.items()}
