"""`make dev`: the whole system on this machine, with embedded defaults.

Starts, in order: the local control plane, Postgres (pgvector), Redis, the
migrations, the CRDs, the local node agent, the API and the operator; then
provisions the demo tenant and loads its knowledge documents through the API.
Everything lives under `.dev/` and stops on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sba_core.auth.dev_tokens import mint_dev_token
from sba_core.group import DELEGATING_APPROVERS_GROUP
from sba_devstack.binaries import default_repo_root, ensure_binaries
from sba_devstack.controlplane import ControlPlane
from sba_devstack.controlplane import up as control_plane_up
from sba_devstack.example_tools import example_image_map
from sba_devstack.postgres_server import PostgresServer, create_database, with_database
from sba_devstack.procs import StartupError, free_port
from sba_devstack.redis_server import RedisServer
from sba_devstack.services import Service, http_ok
from sba_devstack.webhook_certs import operator_webhook_env

API_PORT = 8080
REDIS_PORT = 16379
POSTGRES_PORT = 15432
CRM_PORT = 18091
"""The CRM stand-in crm.sync talks to in `make dev` (`GET /synced` shows what it got)."""
DATABASE = "sba"
DEMO_TENANT = "demo"


@dataclass
class StackPaths:
    root: Path
    state_dir: Path | None = None

    @property
    def state(self) -> Path:
        return self.state_dir or self.root / ".dev"

    @property
    def cluster(self) -> Path:
        return self.state / "cluster"

    @property
    def kubeconfig(self) -> Path:
        """Where the control plane writes its admin kubeconfig."""
        return self.cluster / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def jwt_secret_file(self) -> Path:
        return self.state / "jwt-hs256-secret"

    @property
    def secret_file(self) -> Path:
        return self.state / "step-token-secret"


@dataclass
class Stack:
    """The running dev stack; `stop()` brings it down in reverse order."""

    paths: StackPaths
    control_plane: ControlPlane | None = None
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    bin_dir: Path | None = None
    token: str = ""
    """A demo-tenant access token (member, approver, tenant-admin) for the API."""

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.control_plane is not None:
            self.control_plane.stop()


def _say(message: str) -> None:
    # Progress goes to stderr so stdout stays clean for callers that print JSON (bench/).
    print(f"==> {message}", file=sys.stderr, flush=True)


def _kubectl(bin_dir: Path, kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StartupError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _kept_secret(path: Path) -> str:
    # Kept across restarts so tokens already handed out (step tokens, dev tokens) stay valid.
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _step_token_secret(paths: StackPaths) -> str:
    return _kept_secret(paths.secret_file)


DEV_TOKEN_ROLES = ("member", "approver", "tenant-admin")
API_K8S_USER = "sba-api"
API_K8S_GROUPS = ("system:masters", DELEGATING_APPROVERS_GROUP)


def _api_kubeconfig(control_plane: ControlPlane) -> Path:
    """The API's own identity (sba-api, delegating approver); production binds a ClusterRole
    limited to agentruns, approvals and tenants instead of system:masters."""
    return control_plane.kubeconfig_for(API_K8S_USER, list(API_K8S_GROUPS))


DEV_TOKEN_TTL_SECONDS = 7 * 24 * 3600


async def _ensure_database(admin_dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", DATABASE)
    finally:
        await conn.close()
    if exists:
        return with_database(admin_dsn, DATABASE)
    return await create_database(admin_dsn, DATABASE)


def _post_json(url: str, body: dict[str, object], token: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


def _wait_tenant_ready(bin_dir: Path, kubeconfig: Path, tenant: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = _kubectl(
            bin_dir, kubeconfig, "get", "tenant", tenant, "-o", "jsonpath={.status.phase}"
        )
        if phase.strip() == "ready":
            return
        time.sleep(0.5)
    raise StartupError(
        f"tenant {tenant} not ready after {timeout:.0f}s; see .dev/logs/operator.log"
    )


@dataclass(frozen=True)
class StackPorts:
    """Fixed ports for `make dev`; `StackPorts.ephemeral()` for benchmarks beside it."""

    api: int = API_PORT
    redis: int = REDIS_PORT
    postgres: int = POSTGRES_PORT
    crm: int = CRM_PORT
    fixed_control_plane: bool = True

    @classmethod
    def ephemeral(cls) -> StackPorts:
        return cls(
            api=free_port(),
            redis=free_port(),
            postgres=free_port(),
            crm=free_port(),
            fixed_control_plane=False,
        )


def up(root: Path, state_dir: Path | None = None, ports: StackPorts | None = None) -> Stack:
    paths = StackPaths(root, state_dir)
    ports = ports or StackPorts()
    paths.logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(paths)
    try:
        _say("building or locating the control-plane binaries")
        bin_dir = ensure_binaries(root)
        _say("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
        if ports.fixed_control_plane:
            stack.control_plane = control_plane_up(paths.cluster, bin_dir)
        else:
            stack.control_plane = ControlPlane(paths.cluster, bin_dir).start()
        kubeconfig = stack.control_plane.kubeconfig
        _say("starting Postgres (pgvector) and Redis")
        stack.postgres = PostgresServer(paths.state / "postgres", port=ports.postgres)
        admin_dsn = stack.postgres.start()
        dsn = asyncio.run(_ensure_database(admin_dsn))
        stack.redis = RedisServer(paths.state / "redis", port=ports.redis).start()
        _say("applying migrations and CRDs")
        from sba_store.migrate import migrate_dsn
        from sba_store.roles import APP_PASSWORD_ENV, app_dsn

        # Migrations run as the owner; the API and the operator as sba_app (RLS).
        app_password = os.environ.get(APP_PASSWORD_ENV) or None
        asyncio.run(migrate_dsn(dsn, app_password=app_password))
        _kubectl(bin_dir, kubeconfig, "apply", "--server-side", "-f", str(root / "crds"))
        _kubectl(
            bin_dir,
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        )
        api_url = f"http://127.0.0.1:{ports.api}"
        jwt_secret = _kept_secret(paths.jwt_secret_file)
        stack.token = mint_dev_token(
            jwt_secret,
            tenant=DEMO_TENANT,
            user="developer",
            roles=DEV_TOKEN_ROLES,
            ttl_seconds=DEV_TOKEN_TTL_SECONDS,
        )
        stack.env = {
            "KUBECONFIG": str(kubeconfig),
            "DATABASE_URL": app_dsn(dsn, app_password),
            "REDIS_URL": stack.redis.url,
            "SBA_STEP_TOKEN_SECRET": _step_token_secret(paths),
            "SBA_JWT_HS256_SECRET": jwt_secret,
            "SBA_API_HOST": "127.0.0.1",
            "SBA_API_PORT": str(ports.api),
            "SBA_PUBLIC_URL": api_url,
            "SBA_GATEWAY_URL": api_url,
            "SBA_NODE_WORK_DIR": str(paths.state / "node"),
            "SBA_NODE_IMAGE_MAP": example_image_map(root),
        }
        # The API creates Approvals and cancels runs in its callers' names: it has its own
        # identity, in the group the admission policies trust to do that; the rest stay admin.
        crm_url = f"http://127.0.0.1:{ports.crm}"
        api_env = {
            **stack.env,
            "KUBECONFIG": str(_api_kubeconfig(stack.control_plane)),
            "SBA_CRM_URL": f"{crm_url}/sync",
        }
        crm_env = {
            "SBA_CRM_STANDIN_PORT": str(ports.crm),
            "SBA_CRM_STANDIN_SEED": str(root / "examples" / "crm" / "demo-records.json"),
        }
        # The kube-apiserver calls the operator's admission webhook on 127.0.0.1.
        operator_env = {
            **stack.env,
            **operator_webhook_env(
                stack.control_plane.ca, stack.control_plane.ca_file, paths.state / "webhook"
            ),
        }
        _say("starting the CRM stand-in, the local node agent, the API and the operator")
        for command, env, ready in (
            ("crm-standin", crm_env, http_ok(f"{crm_url}/synced")),
            ("node-agent", stack.env, None),
            ("api", api_env, http_ok(f"{api_url}/readyz")),
            ("operator", operator_env, None),
        ):
            service = Service(command, env, paths.logs / f"{command}.log", ready=ready)
            stack.services.append(service.start())
        _say("provisioning the demo tenant and its knowledge base")
        _kubectl(bin_dir, kubeconfig, "apply", "-f", str(root / "examples" / "tenant-demo.yaml"))
        _wait_tenant_ready(bin_dir, kubeconfig, DEMO_TENANT)
        # The catalog's example user tool (Go): `kubectl get clustertools`.
        _kubectl(
            bin_dir, kubeconfig, "apply", "-f", str(root / "examples/tools/word-stats/tool.yaml")
        )
        for doc in sorted((root / "examples" / "knowledge").glob("*.md")):
            text = doc.read_text()
            title = text.splitlines()[0].lstrip("# ").strip()
            _post_json(
                f"{api_url}/api/v1/knowledge/documents",
                {"tenant": DEMO_TENANT, "title": title, "content": text, "source": doc.name},
                stack.token,
            )
        stack.api_url = api_url
        stack.bin_dir = bin_dir
        return stack
    except BaseException:
        stack.stop()
        raise


def _print_next_steps(paths: StackPaths, bin_dir: Path, api_url: str, token: str) -> None:
    kubectl = f"{bin_dir / 'kubectl'} --kubeconfig {paths.kubeconfig}"
    print(
        f"""
SBA Agentic is up. Logs: {paths.logs}/

  export KUBECONFIG={paths.kubeconfig} PATH={bin_dir}:$PATH
  # an access token for tenant demo (member, approver, tenant-admin; valid 7 days);
  # mint others with: SBA_JWT_HS256_SECRET=$(cat {paths.jwt_secret_file}) sba-agentic token ...
  export TOKEN={token}

  # a run through kubectl
  kubectl apply -f examples/run-demo.yaml
  kubectl -n tenant-demo get agentruns -w

  # user tools: the catalog, and a run of the example Go tool (examples/tools/)
  kubectl get tools,clustertools -A
  curl -s {api_url}/api/v1/tools -H "Authorization: Bearer $TOKEN"
  kubectl apply -f examples/tools/run-word-stats.yaml

  # a run through the API, and its live events
  curl -s -X POST {api_url}/api/v1/runs -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{{"tenant":"demo","prompt":"What is our refund policy for damaged goods?"}}'
  curl -N {api_url}/api/v1/runs/<id>/events -H "Authorization: Bearer $TOKEN"

  API docs: {api_url}/docs     kubectl: {kubectl}

Ctrl-C stops everything.
""",
        flush=True,
    )


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(action: str = "up") -> int:
    root = default_repo_root()
    if action == "status":
        print(f"state dir: {StackPaths(root).state}")
        return 0
    if action == "down":
        print("`make dev` runs in the foreground; stop it with Ctrl-C.")
        return 0
    with _signals_raise():
        stack = up(root)
        assert stack.bin_dir is not None
        _print_next_steps(stack.paths, stack.bin_dir, stack.api_url, stack.token)
        try:
            while all(service.running for service in stack.services):
                time.sleep(1)
            dead = [s.command for s in stack.services if not s.running]
            print(f"stopping: {', '.join(dead)} exited; see {stack.paths.logs}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            _say("stopping")
            stack.stop()
