"""Which host directory stands in for which container image.

`SBA_NODE_IMAGE_MAP` is JSON `{"<image repository without tag>": "<dir put first on PATH>"}`;
a value may also be `{"path": "<dir>", "entrypoint": ["cmd", ...]}` for images whose
pods set no `command`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TOOL_RUNTIME = "sba-agentic/tool-runtime"
BUSYBOX = "busybox"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageEntry:
    """What the node runs for one image repository."""

    repository: str
    path: str
    entrypoint: tuple[str, ...] = ()

    def search_path(self) -> str:
        """PATH for the container: the image's dirs first, then the system's."""
        return f"{self.path}:{SYSTEM_PATH}" if self.path else SYSTEM_PATH

    def image_id(self) -> str:
        """A stable digest-style id, as container runtimes report in `imageID`."""
        digest = hashlib.sha256(f"{self.repository}\0{self.path}".encode()).hexdigest()
        return f"{self.repository}@sha256:{digest}"


def default_image_map(prefix: str | None = None) -> dict[str, ImageEntry]:
    bin_dir = str(Path(prefix if prefix is not None else sys.prefix) / "bin")
    return {
        TOOL_RUNTIME: ImageEntry(TOOL_RUNTIME, bin_dir, ("sba-tool",)),
        BUSYBOX: ImageEntry(BUSYBOX, "/bin:/usr/bin", ("sh",)),
    }


def parse_image_map(text: str, defaults: Mapping[str, ImageEntry]) -> dict[str, ImageEntry]:
    """The defaults overlaid with the JSON map; raises ValueError on a malformed map."""
    result = dict(defaults)
    if not text.strip():
        return result
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"SBA_NODE_IMAGE_MAP is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError("SBA_NODE_IMAGE_MAP must be a JSON object")
    for repo, value in raw.items():
        if isinstance(value, str):
            previous = result.get(repo)
            result[repo] = ImageEntry(repo, value, previous.entrypoint if previous else ())
        elif isinstance(value, dict) and isinstance(value.get("path"), str):
            entry = value.get("entrypoint", [])
            if not isinstance(entry, list) or not all(isinstance(e, str) for e in entry):
                raise ValueError(f"SBA_NODE_IMAGE_MAP[{repo!r}].entrypoint must be a string list")
            result[repo] = ImageEntry(repo, value["path"], tuple(entry))
        else:
            raise ValueError(f"SBA_NODE_IMAGE_MAP[{repo!r}] must be a path or {{'path': ...}}")
    return result


def image_repository(image: str) -> str:
    """`registry/ns/name:tag@sha256:...` -> `registry/ns/name`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def _candidates(repository: str) -> list[str]:
    """The repository itself, then ever shorter path suffixes (dropping registry/org)."""
    parts = repository.split("/")
    names = ["/".join(parts[i:]) for i in range(len(parts))]
    if repository.startswith(("docker.io/library/", "library/")):
        names.append(parts[-1])
    return names


def resolve_image(image: str, image_map: Mapping[str, ImageEntry]) -> ImageEntry | None:
    """The entry for `image`, matching its repository exactly or by trailing path suffix.

    `ghcr.io/acme/sba-agentic/tool-runtime:1.2` matches key `sba-agentic/tool-runtime`;
    `docker.io/library/busybox:1.36` matches `busybox`.
    """
    for name in _candidates(image_repository(image)):
        entry = image_map.get(name)
        if entry is not None:
            return entry
    return None
