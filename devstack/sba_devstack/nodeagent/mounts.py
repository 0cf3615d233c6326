"""Container paths under an emptyDir's mountPath, as host paths of the volume's directory.

The sandbox does not remap the filesystem: a container that writes `/work/x` under a
`volumeMounts: [{name: work, mountPath: /work}]` must write `<scratch>/volumes/work/x`.
Only whole values are translated (an argv element, an env value, the working directory,
the executable), not paths inside a shell script: `sh -c 'cat /work/x'` stays as it is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

MountTable = Sequence[tuple[str, Path]]


def volume_dir(scratch: Path, name: str) -> Path:
    """Where emptyDir `name` of the pod whose scratch dir is `scratch` lives."""
    return scratch / "volumes" / name


def mount_table(
    volume_mounts: Iterable[Mapping[str, Any]], emptydirs: Collection[str], scratch: Path
) -> list[tuple[str, Path]]:
    """(mountPath, host dir) of each mount of a known emptyDir, longest mountPath first
    so the innermost mount wins. Mounts of other volume kinds are not translated."""
    table = []
    for mount in volume_mounts:
        path = str(mount.get("mountPath", "")).rstrip("/")
        name = str(mount.get("name", ""))
        if path and name in emptydirs:
            table.append((path, volume_dir(scratch, name)))
    return sorted(table, key=lambda item: len(item[0]), reverse=True)


def translate(value: str, table: MountTable) -> str:
    """`value` with a leading mountPath replaced by the volume's host directory."""
    for path, host in table:
        if value == path or value.startswith(path + "/"):
            return str(host) + value[len(path) :]
    return value


def translate_env(env: Mapping[str, str], keys: Iterable[str], table: MountTable) -> dict[str, str]:
    """`env` with the values of `keys` translated; the others (the node's own PATH, HOME,
    TMPDIR, ... which may well lie under a mountPath such as /tmp) stay host paths."""
    result = dict(env)
    for key in keys:
        if key in result:
            result[key] = translate(result[key], table)
    return result
