"""Best-effort core/v1 Events about a pod, as a kubelet records them (Pulled, Started, ...)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

from sba_devstack.nodeagent.kube import API_ERRORS, Kube
from sba_devstack.nodeagent.logs import log
from sba_devstack.nodeagent.pod_status import k8s_time


def event_body(
    pod: Mapping[str, Any],
    container: str,
    node: str,
    kind: str,
    reason: str,
    message: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "fieldPath": f"spec.containers{{{container}}}",
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": k8s_time(now),
        "lastTimestamp": k8s_time(now),
        "count": 1,
    }


def record(
    kube: Kube,
    pod: Mapping[str, Any],
    container: str,
    node: str,
    reason: str,
    message: str,
    kind: str = "Normal",
) -> None:
    body = event_body(
        pod, container, node, kind, reason, message, datetime.datetime.now(datetime.UTC)
    )
    try:
        kube.request("POST", f"/api/v1/namespaces/{pod['metadata']['namespace']}/events", body=body)
    except API_ERRORS as err:
        log("event.failed", reason=reason, error=str(err))
