"""The Node object and its Lease: what makes the control plane believe a kubelet is here."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sba_devstack.nodeagent.kube import MERGE_PATCH, STRATEGIC_MERGE, Json, Kube, KubeError
from sba_devstack.nodeagent.pod_status import HOST_IP, k8s_time, micro_time

KUBELET_VERSION = "v1.35.4"
RUNTIME_VERSION = "sba://0.1.0"
LEASE_NAMESPACE = "kube-node-lease"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
_PRESSURE = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


@dataclass(frozen=True)
class Machine:
    """Facts about this host, gathered once."""

    cpus: int
    memory_bytes: int
    storage_bytes: int
    hostname: str
    architecture: str
    kernel: str
    os_image: str
    machine_id: str
    boot_id: str


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def _memory_bytes() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def probe_machine(work_dir: Path) -> Machine:
    return Machine(
        cpus=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        storage_bytes=shutil.disk_usage(work_dir).total,
        hostname=socket.gethostname(),
        architecture=_ARCH.get(platform.machine(), platform.machine()),
        kernel=platform.release(),
        os_image=_os_image(),
        machine_id=_read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
    )


def capacity(machine: Machine, pods: int) -> dict[str, str]:
    return {
        "cpu": str(machine.cpus),
        "memory": f"{machine.memory_bytes // 1024}Ki",
        "ephemeral-storage": f"{machine.storage_bytes // 1024}Ki",
        "pods": str(pods),
    }


def node_conditions(now: datetime.datetime, *, transition: bool) -> list[Json]:
    """Ready=True and the pressure conditions False; heartbeats at `now`.

    With `transition=False` lastTransitionTime is left out so a heartbeat patch keeps
    the stored one (strategic merge by `type`).
    """
    at = k8s_time(now)
    rows: list[tuple[str, str, str, str]] = [(t, "False", r, m) for t, r, m in _PRESSURE]
    rows.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    conditions: list[Json] = []
    for kind, status, reason, message in rows:
        cond: Json = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": at,
        }
        if transition:
            cond["lastTransitionTime"] = at
        conditions.append(cond)
    return conditions


def node_status(machine: Machine, pods: int, now: datetime.datetime, *, transition: bool) -> Json:
    cap = capacity(machine, pods)
    return {
        "capacity": cap,
        "allocatable": dict(cap),
        "conditions": node_conditions(now, transition=transition),
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": machine.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": machine.machine_id,
            "systemUUID": machine.machine_id,
            "bootID": machine.boot_id,
            "kernelVersion": machine.kernel,
            "osImage": machine.os_image,
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": machine.architecture,
        },
    }


def node_labels(name: str, machine: Machine) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": machine.architecture,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": machine.architecture,
    }


def node_body(name: str, machine: Machine, pods: int, now: datetime.datetime) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels(name, machine),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": node_status(machine, pods, now, transition=True),
    }


def lease_body(
    name: str, node_uid: str, duration: int, now: datetime.datetime, resource_version: str = ""
) -> Json:
    metadata: Json = {
        "name": name,
        "namespace": LEASE_NAMESPACE,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(now),
        },
    }


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class NodeRegistration:
    """Registers the Node once, then keeps its status heartbeat and Lease fresh."""

    def __init__(self, kube: Kube, name: str, machine: Machine, pods: int, lease_seconds: int):
        self._kube = kube
        self._name = name
        self._machine = machine
        self._pods = pods
        self._lease_seconds = lease_seconds
        self._node_uid = ""
        self._lease_rv = ""

    @property
    def _node_path(self) -> str:
        return f"/api/v1/nodes/{self._name}"

    def register(self) -> str:
        """Create the Node, or bring an existing one up to date; returns its uid."""
        now = _now()
        try:
            node = self._kube.request(
                "POST", "/api/v1/nodes", body=node_body(self._name, self._machine, self._pods, now)
            )
        except KubeError as err:
            if err.status != 409:
                raise
            node = self._kube.request(
                "PATCH",
                self._node_path,
                body={"metadata": {"labels": node_labels(self._name, self._machine)}},
                content_type=MERGE_PATCH,
            )
        # Create may drop status; always (re)write it, with fresh transition times.
        self._kube.request(
            "PATCH",
            self._node_path + "/status",
            body={"status": node_status(self._machine, self._pods, now, transition=True)},
            content_type=STRATEGIC_MERGE,
        )
        self._node_uid = str(node["metadata"]["uid"])
        return self._node_uid

    def heartbeat(self) -> None:
        """Refresh the conditions' heartbeat times (the Ready one above all)."""
        status = {"conditions": node_conditions(_now(), transition=False)}
        self._kube.request(
            "PATCH",
            self._node_path + "/status",
            body={"status": status},
            content_type=STRATEGIC_MERGE,
        )

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        body = lease_body(self._name, self._node_uid, self._lease_seconds, _now(), self._lease_rv)
        lease: dict[str, Any]
        try:
            if self._lease_rv:
                lease = self._kube.request("PUT", f"{path}/{self._name}", body=body)
            else:
                existing = self._kube.get(f"{path}/{self._name}")
                if existing is None:
                    lease = self._kube.request("POST", path, body=body)
                else:
                    body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                    lease = self._kube.request("PUT", f"{path}/{self._name}", body=body)
        except KubeError as err:
            if err.status in (404, 409):
                self._lease_rv = ""  # someone else wrote it; re-read next time
            raise
        self._lease_rv = str(lease["metadata"]["resourceVersion"])
