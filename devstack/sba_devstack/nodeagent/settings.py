"""All the agent's configuration, read once from the environment and passed in explicitly."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sba_devstack.nodeagent.images import ImageEntry, default_image_map, parse_image_map

DEFAULT_NODE_NAME = "sba-local-node"
DEFAULT_SANDBOX_USER = "nobody"


@dataclass(frozen=True)
class NodeAgentSettings:
    """`from_env` reads KUBECONFIG and SBA_NODE_*; tests build it directly."""

    node_name: str = DEFAULT_NODE_NAME
    kubeconfig: Path | None = None
    image_map: Mapping[str, ImageEntry] = field(default_factory=default_image_map)
    work_dir: Path = field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"sba-node-{DEFAULT_NODE_NAME}"
    )
    # The user a container runs as when neither pod nor container sets runAsUser (root only).
    sandbox_user: str = DEFAULT_SANDBOX_USER
    # Obtain node credentials through a CSR (credentials.py); SBA_NODE_BOOTSTRAP=0 disables.
    bootstrap_credentials: bool = True
    lease_duration_seconds: int = 40
    lease_renew_interval: float = 10.0
    node_status_interval: float = 20.0
    pods_per_node: int = 110
    # Seconds between checks of a running container (exit, deadline, memory).
    poll_interval: float = 0.1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeAgentSettings:
        env = os.environ if env is None else env
        node_name = env.get("SBA_NODE_NAME") or DEFAULT_NODE_NAME
        kubeconfig = env.get("KUBECONFIG")
        work_dir = env.get("SBA_NODE_WORK_DIR")
        return cls(
            node_name=node_name,
            # KUBECONFIG may be a list; the agent uses the first file.
            kubeconfig=Path(kubeconfig.split(os.pathsep)[0]) if kubeconfig else None,
            image_map=parse_image_map(env.get("SBA_NODE_IMAGE_MAP", ""), default_image_map()),
            work_dir=(
                Path(work_dir)
                if work_dir
                else Path(tempfile.gettempdir()) / f"sba-node-{node_name}"
            ),
            sandbox_user=env.get("SBA_NODE_SANDBOX_USER") or DEFAULT_SANDBOX_USER,
            bootstrap_credentials=env.get("SBA_NODE_BOOTSTRAP", "1") not in ("0", "false", "no"),
        )
