"""The agent's loops: register the Node, keep it alive, and watch the Pods bound to it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sba_devstack.nodeagent.kube import API_ERRORS, Json, Kube, KubeError
from sba_devstack.nodeagent.logs import log
from sba_devstack.nodeagent.pod_worker import NodeContext, PodWorker
from sba_devstack.nodeagent.registration import NodeRegistration, probe_machine
from sba_devstack.nodeagent.settings import NodeAgentSettings

WATCH_TIMEOUT_SECONDS = 300
RETRY_DELAY = 1.0
SHUTDOWN_JOIN_SECONDS = 5.0


def prepare_work_dir(work_dir: Path) -> None:
    """<work>/pods holds per-pod scratch dirs owned by sandbox users, so the path down
    to it must be traversable (not listable) by them; run/ and logs/ stay root-only."""
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o711)
    (work_dir / "pods").mkdir(exist_ok=True)
    (work_dir / "pods").chmod(0o711)
    for private in ("run", "logs"):
        (work_dir / private).mkdir(exist_ok=True)
        (work_dir / private).chmod(0o700)


class NodeAgent:
    def __init__(self, settings: NodeAgentSettings, kube: Kube, stop: threading.Event) -> None:
        self._settings = settings
        self._kube = kube
        self._stop = stop
        self._ctx = NodeContext(settings, kube, stop, agent_is_root=os.geteuid() == 0)
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._registration: NodeRegistration | None = None

    def run(self) -> None:
        """Register, then serve until `stop` is set; kills every container on the way out."""
        prepare_work_dir(self._settings.work_dir)
        machine = probe_machine(self._settings.work_dir)
        self._registration = NodeRegistration(
            self._kube,
            self._settings.node_name,
            machine,
            self._settings.pods_per_node,
            self._settings.lease_duration_seconds,
        )
        self._register()
        threads = [
            threading.Thread(target=self._lease_loop, name="lease", daemon=True),
            threading.Thread(target=self._status_loop, name="node-status", daemon=True),
            threading.Thread(target=self._watch_loop, name="pod-watch", daemon=True),
        ]
        for thread in threads:
            thread.start()
        self._stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.kill()
        deadline = time.monotonic() + SHUTDOWN_JOIN_SECONDS
        for worker in workers:
            worker.thread.join(max(deadline - time.monotonic(), 0))
        log("agent.stopped", node=self._settings.node_name, pods=len(workers))

    # -- node -------------------------------------------------------------------------

    def _register(self) -> None:
        assert self._registration is not None
        while not self._stop.is_set():
            try:
                uid = self._registration.register()
                self._registration.renew_lease()
            except API_ERRORS as err:
                log("node.register_failed", node=self._settings.node_name, error=str(err))
                self._stop.wait(RETRY_DELAY)
                continue
            log("node.registered", node=self._settings.node_name, uid=uid)
            return

    def _lease_loop(self) -> None:
        assert self._registration is not None
        while not self._stop.wait(self._settings.lease_renew_interval):
            try:
                self._registration.renew_lease()
            except API_ERRORS as err:
                log("node.lease_failed", node=self._settings.node_name, error=str(err))

    def _status_loop(self) -> None:
        assert self._registration is not None
        while not self._stop.wait(self._settings.node_status_interval):
            try:
                self._registration.heartbeat()
            except KubeError as err:
                log("node.status_failed", node=self._settings.node_name, error=str(err))
                if err.status == 404:  # someone deleted the Node: register again
                    self._register()
            except API_ERRORS as err:
                log("node.status_failed", node=self._settings.node_name, error=str(err))

    # -- pods -------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        path = "/api/v1/pods"
        selector = {"fieldSelector": f"spec.nodeName={self._settings.node_name}"}
        while not self._stop.is_set():
            try:
                listing = self._kube.request("GET", path, query=selector)
                self._sync(listing.get("items") or [])
                version = str(listing["metadata"]["resourceVersion"])
                while not self._stop.is_set():
                    version = self._watch_once(path, selector, version)
            except _Relist:
                continue
            except API_ERRORS as err:
                if not self._stop.is_set():
                    log("pods.watch_failed", error=str(err))
                    self._stop.wait(RETRY_DELAY)
            except Exception as err:
                log("pods.watch_crashed", error=repr(err))
                self._stop.wait(RETRY_DELAY)

    def _watch_once(self, path: str, selector: dict[str, str], version: str) -> str:
        """One watch request; returns the version to resume from, raises _Relist on 410."""
        query = {**selector, "resourceVersion": version}
        for event in self._kube.watch(path, query, WATCH_TIMEOUT_SECONDS):
            if self._stop.is_set():
                break
            kind = event.get("type")
            obj: Json = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Relist
                raise KubeError(int(obj.get("code") or 500), str(obj.get("reason")), obj)
            version = str(obj.get("metadata", {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED"):
                self._handle(obj)
            elif kind == "DELETED":
                self._handle_deleted(obj)
        return version

    def _sync(self, pods: list[Json]) -> None:
        """After a (re)list: hand every pod to its worker; pods that vanished are deleted."""
        present = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            missing = [w for uid, w in self._workers.items() if uid not in present]
        for worker in missing:
            self._forget(worker)
        for pod in pods:
            self._handle(pod)

    def _handle(self, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None:
                worker = PodWorker(self._ctx, pod)
                self._workers[uid] = worker
                new = True
            else:
                new = False
        if new:
            log("pod.accepted", pod=f"{worker.namespace}/{worker.name}", uid=uid)
            worker.start()
        else:
            worker.update(pod)

    def _handle_deleted(self, pod: Json) -> None:
        with self._lock:
            worker = self._workers.get(pod["metadata"]["uid"])
        if worker is not None:
            self._forget(worker)

    def _forget(self, worker: PodWorker) -> None:
        with self._lock:
            self._workers.pop(worker.uid, None)
        worker.removed()


class _Relist(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""
