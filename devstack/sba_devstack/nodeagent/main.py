"""`sba-agentic node-agent`: run the local node agent until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from sba_devstack.nodeagent.agent import NodeAgent
from sba_devstack.nodeagent.credentials import node_kube
from sba_devstack.nodeagent.kube import Kube
from sba_devstack.nodeagent.logs import log
from sba_devstack.nodeagent.settings import NodeAgentSettings


def run() -> int:
    try:
        settings = NodeAgentSettings.from_env()
    except ValueError as err:
        log("agent.bad_settings", error=str(err))
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log("agent.signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kube = Kube.from_kubeconfig(settings.kubeconfig)
    if settings.bootstrap_credentials:
        as_node = node_kube(kube, settings.node_name, settings.work_dir / "pki")
        if as_node is not None:
            kube.close()
            kube = as_node
    log(
        "agent.starting",
        node=settings.node_name,
        kubeconfig=str(settings.kubeconfig),
        workDir=str(settings.work_dir),
        images=sorted(settings.image_map),
    )
    try:
        NodeAgent(settings, kube, stop).run()
    finally:
        kube.close()
    return 0
