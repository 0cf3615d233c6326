"""A real Kubernetes control plane (etcd, apiserver, controller-manager, scheduler) as
local processes, for `make dev` and the integration tests.

There is no kubelet: the scheduler leaves pods Pending until a node (the dev node agent)
registers. Authentication is by X.509 client certificate, authorization is Node+RBAC,
exactly as on a real cluster, so RBAC mistakes show up locally.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sba_devstack import certs
from sba_devstack.procs import StartupError, free_port, port_in_use, spawn, stop, wait_until

SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc"
STARTUP_TIMEOUT = 60.0
AUDIT_LOG_ENV = "SBA_DEV_APISERVER_AUDIT_LOG"
"""Opt-in (bench/run_throughput.py): a path makes the apiserver write a Metadata-level
audit log there (one JSON event per line: user, userAgent, verb, objectRef, timestamps)."""
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request when it completes, plus ResponseStarted for watches.
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


@dataclass
class Ports:
    """Loopback ports; 0 means "pick a free one at start()"."""

    etcd_client: int = 0
    etcd_peer: int = 0
    apiserver: int = 0
    controller_manager: int = 0
    scheduler: int = 0

    def resolved(self) -> Ports:
        return Ports(*(p or free_port() for p in self.as_tuple()))

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (
            self.etcd_client,
            self.etcd_peer,
            self.apiserver,
            self.controller_manager,
            self.scheduler,
        )


# Fixed ports for the long-running dev stack, offset from the well-known ones so a
# real cluster on the same machine does not collide.
DEV_PORTS = Ports(etcd_client=23790, etcd_peer=23800, apiserver=16443)


@dataclass
class _Pki:
    """Files on disk under <state>/pki; paths only, so they can go on command lines."""

    dir: Path
    ca_crt: Path = field(init=False)
    ca_key: Path = field(init=False)
    apiserver_crt: Path = field(init=False)
    apiserver_key: Path = field(init=False)
    kubelet_client_crt: Path = field(init=False)
    kubelet_client_key: Path = field(init=False)
    admin_crt: Path = field(init=False)
    admin_key: Path = field(init=False)
    front_proxy_ca_crt: Path = field(init=False)
    front_proxy_ca_key: Path = field(init=False)
    front_proxy_client_crt: Path = field(init=False)
    front_proxy_client_key: Path = field(init=False)
    sa_pub: Path = field(init=False)
    sa_key: Path = field(init=False)

    def __post_init__(self) -> None:
        for name in (
            "ca",
            "apiserver",
            "kubelet_client",
            "admin",
            "front_proxy_ca",
            "front_proxy_client",
        ):
            setattr(self, f"{name}_crt", self.dir / f"{name.replace('_', '-')}.crt")
            setattr(self, f"{name}_key", self.dir / f"{name.replace('_', '-')}.key")
        self.sa_pub = self.dir / "sa.pub"
        self.sa_key = self.dir / "sa.key"


class ControlPlane:
    """Start/stop a local control plane rooted in `state_dir`.

    Certificates and etcd data live in `state_dir` and are reused across restarts, so
    kubeconfigs handed out earlier stay valid. Use as a context manager or call
    start()/stop(); start() blocks until the cluster is usable.
    """

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path,
        ports: Ports | None = None,
        audit_log: Path | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.bin_dir = bin_dir
        # Default off; $SBA_DEV_APISERVER_AUDIT_LOG turns it on without touching callers.
        audit = audit_log or os.environ.get(AUDIT_LOG_ENV) or None
        self.audit_log: Path | None = Path(audit).resolve() if audit else None
        self._requested_ports = ports or Ports()
        self.ports = self._requested_ports
        self._pki = _Pki(self.state_dir / "pki")
        self._ca: certs.KeyPair | None = None
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs = self.state_dir / "logs"

    # -- public surface -------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (CN=sba-admin, O=system:masters)."""
        return self.state_dir / "kubeconfig"

    @property
    def ca(self) -> certs.KeyPair:
        if self._ca is None:
            raise RuntimeError("control plane not started")
        return self._ca

    @property
    def ca_file(self) -> Path:
        return self._pki.ca_crt

    def log_path(self, component: str) -> Path:
        return self._logs / f"{component}.log"

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] | list[str] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` (no RBAC is granted here)."""
        client = certs.issue_client_cert(self.ca, user, groups)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        path = self.state_dir / "kubeconfigs" / f"{safe}.kubeconfig"
        return certs.write_kubeconfig(path, self.server, self.ca.cert_pem, client, user)

    def start(self) -> ControlPlane:
        if self._procs:  # already running (e.g. `with up(...)`)
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ports = self._requested_ports.resolved()
        for port in self.ports.as_tuple():
            if port_in_use(port):
                raise StartupError(
                    f"port {port} is already in use (another control plane still running?)"
                )
        self._ensure_pki()
        atexit.register(self.stop)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._wait_cluster_usable()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        # Reverse start order: the apiserver goes before etcd so it never logs a storm
        # of etcd connection errors on the way out.
        while self._procs:
            _, proc = self._procs.pop()
            stop(proc)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- PKI -------------------------------------------------------------------------

    def _ensure_pki(self) -> None:
        pki = self._pki
        pki.dir.mkdir(parents=True, exist_ok=True)
        pki.dir.chmod(0o700)
        if pki.ca_crt.exists() and pki.ca_key.exists():
            self._ca = certs.KeyPair(pki.ca_crt.read_bytes(), pki.ca_key.read_bytes())
        else:
            self._ca = certs.create_ca()
            self._ca.write(pki.ca_crt, pki.ca_key)
        if not pki.apiserver_crt.exists():
            certs.issue_serving_cert(self._ca).write(pki.apiserver_crt, pki.apiserver_key)
        if not pki.kubelet_client_crt.exists():
            # Used by the apiserver for logs/exec against a node agent's kubelet API.
            kubelet_client = certs.issue_client_cert(
                self._ca, "kube-apiserver-kubelet-client", ["system:masters"]
            )
            kubelet_client.write(pki.kubelet_client_crt, pki.kubelet_client_key)
        if not pki.admin_crt.exists():
            admin = certs.issue_client_cert(self._ca, "sba-admin", ["system:masters"])
            admin.write(pki.admin_crt, pki.admin_key)
        if not pki.front_proxy_client_crt.exists():
            # Aggregation-layer trust, kept on its own CA as kubeadm does: the
            # controller-manager and scheduler read it for delegated authentication and
            # log errors every few seconds when it is missing.
            front_ca = certs.create_ca("sba-devstack-front-proxy-ca")
            front_ca.write(pki.front_proxy_ca_crt, pki.front_proxy_ca_key)
            certs.issue_client_cert(front_ca, "front-proxy-client").write(
                pki.front_proxy_client_crt, pki.front_proxy_client_key
            )
        if not pki.sa_key.exists():
            certs.create_service_account_keys().write(pki.sa_pub, pki.sa_key)
        # Kubeconfigs embed the server URL, whose port may differ per start.
        admin = certs.KeyPair(pki.admin_crt.read_bytes(), pki.admin_key.read_bytes())
        certs.write_kubeconfig(self.kubeconfig, self.server, self._ca.cert_pem, admin, "sba-admin")
        for component in ("kube-controller-manager", "kube-scheduler"):
            client = certs.issue_client_cert(self._ca, f"system:{component}")
            certs.write_kubeconfig(
                self._component_kubeconfig(component),
                self.server,
                self._ca.cert_pem,
                client,
                f"system:{component}",
            )

    def _component_kubeconfig(self, component: str) -> Path:
        return self._pki.dir / f"{component}.kubeconfig"

    # -- HTTP probes -----------------------------------------------------------------

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self._pki.ca_crt))
        ctx.load_cert_chain(str(self._pki.admin_crt), str(self._pki.admin_key))
        return ctx

    def _get(self, url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _ok(self, url: str, ctx: ssl.SSLContext | None = None) -> bool:
        status, _ = self._get(url, ctx)
        return status == 200

    # -- components ------------------------------------------------------------------

    def _spawn(self, component: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_path(component)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            fh.write(f"\n==== {time.strftime('%F %T')} starting {component}\n".encode())
        proc = spawn([str(self.bin_dir / component), *args], log, cwd=self.state_dir)
        self._procs.append((component, proc))
        return proc

    def _start_etcd(self) -> None:
        p = self.ports
        client = f"http://127.0.0.1:{p.etcd_client}"
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        proc = self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # Dev/test data is disposable; fsync dominates etcd latency on slow disks.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        wait_until(
            "etcd",
            lambda: self._ok(f"{client}/health"),
            proc,
            self.log_path("etcd"),
            STARTUP_TIMEOUT,
        )

    def _audit_flags(self) -> list[str]:
        if self.audit_log is None:
            return []
        policy = self.state_dir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            # Rotation at 1 GiB (0 would mean the writer's 100 MiB default): one file.
            "--audit-log-maxsize=1024",
        ]

    def _start_apiserver(self) -> None:
        pki = self._pki
        proc = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                f"--secure-port={self.ports.apiserver}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={pki.dir}",
                f"--tls-cert-file={pki.apiserver_crt}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--kubelet-client-certificate={pki.kubelet_client_crt}",
                f"--kubelet-client-key={pki.kubelet_client_key}",
                f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client_crt}",
                f"--proxy-client-key-file={pki.front_proxy_client_key}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=false",
                # Endpoints may not point at loopback, so the `kubernetes` Service cannot
                # be backed by 127.0.0.1; don't let the reconciler fail every 10s. Pods
                # run by the dev node agent reach the apiserver directly instead.
                "--endpoint-reconciler-type=none",
                # Defaults (NamespaceLifecycle, LimitRanger, ServiceAccount, PodSecurity,
                # ResourceQuota, DefaultTolerationSeconds, ...) stay on; NodeRestriction
                # pairs with the Node authorizer to confine node identities.
                "--enable-admission-plugins=NodeRestriction",
                "--profiling=false",
                "--v=1",
                *self._audit_flags(),
            ],
        )
        ctx = self._admin_ssl()
        wait_until(
            "kube-apiserver",
            lambda: self._ok(f"{self.server}/readyz", ctx),
            proc,
            self.log_path("kube-apiserver"),
            STARTUP_TIMEOUT,
        )

    def _serving_flags(self, component: str, port: int) -> list[str]:
        # Serve /healthz so readiness is observable; delegated authn/authz goes through
        # the component's own identity, which the bootstrap RBAC roles allow.
        kubeconfig = self._component_kubeconfig(component)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={self.state_dir / component}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _start_controller_manager(self) -> None:
        pki = self._pki
        self._spawn(
            "kube-controller-manager",
            [
                *self._serving_flags("kube-controller-manager", self.ports.controller_manager),
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                # Each controller acts as its own kube-system ServiceAccount, as kubeadm
                # does; the bootstrap RBAC roles are written for that mode.
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--concurrent-job-syncs=10",
                # Otherwise it creates /usr/libexec/kubernetes/... on the host.
                f"--flex-volume-plugin-dir={self.state_dir / 'flexvolume'}",
                # Single-node dev cluster: a node agent that restarts or pauses in a
                # debugger should not see its pods evicted. Defaults are 50s / 1m; pods
                # also tolerate not-ready/unreachable for 300s (DefaultTolerationSeconds).
                "--node-monitor-grace-period=120s",
                "--node-startup-grace-period=120s",
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            self._serving_flags("kube-scheduler", self.ports.scheduler),
        )

    def _wait_cluster_usable(self) -> None:
        """Ready when the apiserver, controller-manager and scheduler all say so."""
        ctx = self._admin_ssl()
        # Their serving certs are self-signed; we only care that /healthz says ok.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        procs = dict(self._procs)
        for component, port in (
            ("kube-controller-manager", self.ports.controller_manager),
            ("kube-scheduler", self.ports.scheduler),
        ):
            wait_until(
                component,
                functools.partial(self._ok, f"https://127.0.0.1:{port}/healthz", insecure),
                procs[component],
                self.log_path(component),
                STARTUP_TIMEOUT,
            )

        def default_sa_exists() -> bool:
            url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
            status, body = self._get(url, ctx)
            return status == 200 and json.loads(body).get("metadata", {}).get("name") == "default"

        # The serviceaccount controller creating `default` proves the controller-manager
        # is talking to the apiserver with working credentials.
        wait_until(
            "kube-controller-manager (default ServiceAccount)",
            default_sa_exists,
            procs["kube-controller-manager"],
            self.log_path("kube-controller-manager"),
            STARTUP_TIMEOUT,
        )


def up(state_dir: Path, bin_dir: Path | None = None) -> ControlPlane:
    """Start the dev-stack control plane on fixed ports; admin kubeconfig at
    `<state_dir>/kubeconfig`."""
    if bin_dir is None:
        from sba_devstack.binaries import default_repo_root, ensure_binaries

        bin_dir = ensure_binaries(default_repo_root())
    return ControlPlane(state_dir, bin_dir, DEV_PORTS).start()


def main() -> None:
    """`python -m sba_devstack.controlplane [STATE_DIR]`: run the dev control plane in
    the foreground until Ctrl-C (default state dir: <repo>/.dev/controlplane)."""
    import signal
    import sys

    from sba_devstack.binaries import default_repo_root

    default = default_repo_root() / ".dev" / "controlplane"
    state_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    started = time.monotonic()
    with up(state_dir) as cp:
        print(f"control plane ready in {time.monotonic() - started:.1f}s at {cp.server}")
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print(f"logs: {cp.log_path('kube-apiserver').parent}")
        # Block only now, after the children were spawned, so they don't inherit the mask.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
