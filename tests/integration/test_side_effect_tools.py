"""task.create, crm.sync and http.fetch end to end through the real tool gateway.

The API runs in-process (aiohttp TestServer) on real Postgres, Redis and Kubernetes; the
tools run as the real ``sba-tool`` subprocess with a step token, exactly as in a pod. The
"CRM" is a local aiohttp server standing in for a third-party SaaS: it honours
``Idempotency-Key`` the way a real CRM API does and counts effective syncs.

http.fetch's production address policy refuses loopback, so the subprocess can only show
refusals against local servers. To show a successful fetch and redirect handling, the same
runtime (StepRunner) runs in-process with a policy that admits exactly 127.0.0.1 on top of
the production one, and a resolver that maps test host names to it.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sba_api.app import create_app
from sba_api.settings import (
    AuthSettings,
    DatabaseSettings,
    GatewaySettings,
    KubernetesSettings,
    RedisSettings,
    Settings,
    ToolSettings,
)
from sba_core.step_token import StepClaims, mint_step_token
from sba_core.tools.egress import IPAddress, public_only
from sba_store.audit import AuditRepository
from sba_store.db import Pool, tenant_transaction
from sba_store.errors import StoreError
from sba_store.runs import RunRepository
from sba_store.tasks import TaskRepository
from sba_store.tool_calls import ToolCallRepository
from sba_tools.egress import SafeHttpClient
from sba_tools.gateway import GatewayClient
from sba_tools.jsonlog import JsonLogger
from sba_tools.runtime import StepRunner
from sba_tools.settings import RuntimeSettings

pytestmark = pytest.mark.integration

SBA_TOOL = os.environ.get("SBA_TOOL_BIN") or str(Path(sys.executable).with_name("sba-tool"))
SECRET = "side-effect-step-token-secret-0123456789"
TENANT = f"se{uuid.uuid4().hex[:6]}"
ALLOWLIST = ("127.0.0.1", "site.test", "169.254.169.254")

Client = TestClient[web.Request, web.Application]


# --- the CRM stand-in and a web site ------------------------------------------------------


@dataclass
class FakeCrm:
    url: str = ""
    requests: list[tuple[str | None, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency-Key → the answer of the first (the only effective) sync."""

    @property
    def effective_syncs(self) -> int:
        return len(self.answers)

    async def sync(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        self.requests.append((key, body, dict(request.headers)))
        emails = [c["email"] for c in body.get("contacts", [])]
        if any(e.startswith("reject") for e in emails):
            return web.json_response({"error": "invalid contact"}, status=422)
        if any(e.startswith("flaky") for e in emails):
            return web.json_response({"error": "try later"}, status=503)
        if key is None:
            return web.json_response({"error": "Idempotency-Key required"}, status=400)
        if key not in self.answers:  # a replayed key changes nothing and gets the same answer
            self.answers[key] = {
                "remoteId": f"crm-{len(self.answers) + 1}",
                "synced": {"contacts": len(body["contacts"]), "deals": len(body["deals"])},
            }
        return web.json_response(self.answers[key])


@dataclass
class Site:
    url: str = ""
    port: int = 0
    hits: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def page(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            return web.Response(
                text="<html><body>Refund policy: 30 days.</body></html>",
                content_type="text/html",
            )

        async def start(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            raise web.HTTPFound(f"http://site.test:{self.port}/page")

        async def to_metadata(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/iam/")

        async def hook(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_get("/page", page)
        app.router.add_get("/start", start)
        app.router.add_get("/to-metadata", to_metadata)
        app.router.add_post("/hook", hook)
        return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}", port


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def crm() -> AsyncIterator[FakeCrm]:
    stub = FakeCrm()
    app = web.Application()
    app.router.add_post("/sync", stub.sync)
    runner, base, _ = await _serve(app)
    stub.url = f"{base}/sync"
    yield stub
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site() -> AsyncIterator[Site]:
    stub = Site()
    runner, stub.url, stub.port = await _serve(stub.app())
    yield stub
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(
    app_dsn: str, redis_url: str, kubeconfig: Path, crm: FakeCrm
) -> AsyncIterator[Client]:
    settings = Settings(
        database=DatabaseSettings(url=app_dsn),
        redis=RedisSettings(url=redis_url),
        kubernetes=KubernetesSettings(kubeconfig=kubeconfig),
        gateway=GatewaySettings(step_token_secret=SECRET),
        auth=AuthSettings(hs256_secret="side-effect-jwt-secret-0123456789abcdef"),
        tools=ToolSettings(crm_url=crm.url, default_egress_allowlist=ALLOWLIST),
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


# --- helpers --------------------------------------------------------------------------


@dataclass
class Step:
    run_id: uuid.UUID
    step_id: str
    tool: str

    def token(self, attempt: int) -> str:
        claims = StepClaims(
            run_id=str(self.run_id),
            tenant=TENANT,
            namespace=f"tenant-{TENANT}",
            run_name=f"run-{self.run_id.hex[:8]}",
            step_id=self.step_id,
            attempt=attempt,
            tool=self.tool,
        )
        return mint_step_token(SECRET, claims, 300)


async def _step(
    pool: Pool, tool: str, params: dict[str, Any], *, attempts: int = 2, step_id: str = "s1"
) -> Step:
    """A run with one step of ``tool``, its attempts recorded as the operator would."""
    run_id = uuid.uuid4()
    await RunRepository(pool).upsert(
        run_id=run_id,
        tenant_id=TENANT,
        namespace=f"tenant-{TENANT}",
        name=f"run-{run_id.hex[:8]}",
        prompt="side effects",
        spec={},
    )
    for attempt in range(1, attempts + 1):
        await ToolCallRepository(pool).record_start(
            run_id=run_id,
            step_id=step_id,
            attempt=attempt,
            tool=tool,
            tool_version="1.0.0",
            tenant_id=TENANT,
            params=params,
        )
    return Step(run_id, step_id, tool)


@dataclass
class ToolRun:
    code: int
    termination: dict[str, Any]
    stderr: str


async def _run_tool(tmp_path: Path, api: Client, step: Step, attempt: int) -> ToolRun:
    termination = tmp_path / f"termination-{step.step_id}-{attempt}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SBA_GATEWAY_URL": str(api.make_url("")).rstrip("/"),
        "SBA_STEP_TOKEN": step.token(attempt),
        "SBA_RUN_ID": str(step.run_id),
        "SBA_STEP_ID": step.step_id,
        "SBA_TERMINATION_LOG": str(termination),
        "SBA_GATEWAY_TIMEOUT_SECONDS": "20",
    }
    proc = await asyncio.create_subprocess_exec(
        SBA_TOOL, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    raw = termination.read_bytes() if termination.exists() else b"{}"
    return ToolRun(proc.returncode, json.loads(raw), err.decode())


async def _recorded(pool: Pool, step: Step, attempt: int) -> Any:
    call = await ToolCallRepository(pool).get(step.run_id, step.step_id, attempt, tenant_id=TENANT)
    assert call is not None
    return call


# --- task.create ------------------------------------------------------------------------


async def test_task_create_creates_one_task_per_step(
    tmp_path: Path, api: Client, pg_pool: Pool
) -> None:
    params = {"title": "Call Ana back", "dueDate": "2030-05-01", "assignee": "bo"}
    step = await _step(pg_pool, "task.create", params)

    first = await _run_tool(tmp_path, api, step, 1)
    assert first.code == 0, first.stderr
    assert "created" in first.termination["summary"]
    second = await _run_tool(tmp_path, api, step, 2)  # a retried step: same key
    assert second.code == 0, second.stderr
    assert "already created" in second.termination["summary"]

    one = (await _recorded(pg_pool, step, 1)).result
    two = (await _recorded(pg_pool, step, 2)).result
    assert one["created"] is True
    assert two["created"] is False
    assert one["taskId"] == two["taskId"]
    assert one["delivered"] is two["delivered"] is False

    tasks = await TaskRepository(pg_pool).list_for_run(step.run_id, tenant_id=TENANT)
    assert len(tasks) == 1
    task = tasks[0]
    assert str(task.id) == one["taskId"]
    assert (task.title, task.assignee, task.due_date.isoformat() if task.due_date else None) == (
        "Call Ana back",
        "bo",
        "2030-05-01",
    )
    assert task.idempotency_key == f"{step.run_id}:{step.step_id}"
    # Another tenant sees nothing of it: the repository's filter, and row-level security
    # underneath it (pg_pool connects as sba_app), even for a query without the filter.
    assert await TaskRepository(pg_pool).get(task.id, tenant_id="someone-else") is None
    count = "select count(*) from tasks where id = $1"
    async with tenant_transaction(pg_pool, "someone-else") as conn:
        assert await conn.fetchval(count, task.id) == 0
    async with tenant_transaction(pg_pool, TENANT) as conn:
        assert await conn.fetchval(count, task.id) == 1
    with pytest.raises(StoreError, match="row-level security"):
        async with tenant_transaction(pg_pool, "someone-else") as conn:
            await conn.execute(
                "insert into tasks (tenant_id, run_id, step_id, idempotency_key, title)"
                " values ($1, $2, 'x', 'forged', 'forged')",
                TENANT,
                step.run_id,
            )


async def test_task_create_refuses_a_loopback_webhook_before_creating(
    tmp_path: Path, api: Client, pg_pool: Pool, site: Site
) -> None:
    params = {"title": "Hook me", "webhookUrl": f"{site.url}/hook"}
    step = await _step(pg_pool, "task.create", params, attempts=1)
    run = await _run_tool(tmp_path, api, step, 1)
    assert run.code == 2, run.stderr
    assert "loopback" in run.termination["error"]
    assert await TaskRepository(pg_pool).list_for_run(step.run_id, tenant_id=TENANT) == []
    assert "/hook" not in site.hits
    assert (await _recorded(pg_pool, step, 1)).success is False


async def test_gateway_task_endpoint_checks_the_token_and_the_params(
    api: Client, pg_pool: Pool
) -> None:
    step = await _step(pg_pool, "task.create", {"title": "Planned"}, attempts=1)
    auth = {"Authorization": f"Bearer {step.token(1)}"}
    resp = await api.post("/internal/v1/tasks", json={"title": "Something else"}, headers=auth)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "task_params_mismatch"
    resp = await api.post("/internal/v1/tasks", json={"title": "Planned"}, headers=auth)
    assert resp.status == 201
    created = await resp.json()
    resp = await api.post("/internal/v1/tasks", json={"title": "Planned"}, headers=auth)
    assert resp.status == 200
    assert (await resp.json())["taskId"] == created["taskId"]

    search = await _step(pg_pool, "knowledge.search", {"query": "x"}, attempts=1)
    resp = await api.post(
        "/internal/v1/tasks",
        json={"title": "Planned"},
        headers={"Authorization": f"Bearer {search.token(1)}"},
    )
    assert resp.status == 403
    resp = await api.post("/internal/v1/tasks", json={"title": "Planned"})
    assert resp.status == 401


# --- crm.sync ---------------------------------------------------------------------------


async def test_crm_sync_is_effective_once_per_step(
    tmp_path: Path, api: Client, pg_pool: Pool, crm: FakeCrm
) -> None:
    params = {
        "contacts": [{"email": "ana@example.com", "name": "Ana"}],
        "deals": [{"name": "Renewal", "amount": 1200, "stage": "won"}],
        "mode": "upsert",
    }
    step = await _step(pg_pool, "crm.sync", params)
    before = crm.effective_syncs
    first = await _run_tool(tmp_path, api, step, 1)
    assert first.code == 0, first.stderr
    second = await _run_tool(tmp_path, api, step, 2)
    assert second.code == 0, second.stderr

    key = f"{step.run_id}:{step.step_id}"
    mine = [r for r in crm.requests if r[0] == key]
    assert len(mine) == 2  # the tool ran twice...
    assert crm.effective_syncs == before + 1  # ...and the CRM synced once
    body, headers = mine[0][1], mine[0][2]
    assert body["contacts"] == [{"email": "ana@example.com", "name": "Ana"}]
    assert (body["runId"], body["stepId"], body["tenant"]) == (str(step.run_id), "s1", TENANT)
    assert headers["X-SBA-Run-Id"] == str(step.run_id)
    one = (await _recorded(pg_pool, step, 1)).result
    two = (await _recorded(pg_pool, step, 2)).result
    assert one == two
    assert one["synced"] == {"contacts": 1, "deals": 1}
    assert one["remoteId"].startswith("crm-")

    # Each attempt's side-effecting call is in the audit log, with its idempotency key.
    audited = [
        entry
        for entry in await AuditRepository(pg_pool).list_for_tenant(TENANT, limit=500)
        if entry.action == "tool.side_effect" and entry.payload["runId"] == str(step.run_id)
    ]
    assert sorted(entry.payload["attempt"] for entry in audited) == [1, 2]
    assert {entry.target for entry in audited} == {"crm.sync"}
    assert {entry.payload["idempotencyKey"] for entry in audited} == {key}
    assert all(entry.actor == f"run/{step.run_id}" for entry in audited)


async def test_crm_errors_are_permanent_or_transient(
    tmp_path: Path, api: Client, pg_pool: Pool
) -> None:
    rejected = await _step(pg_pool, "crm.sync", {"contacts": [{"email": "reject@x.io"}]})
    run = await _run_tool(tmp_path, api, rejected, 1)
    assert run.code == 2, run.stderr
    assert "HTTP 422" in run.termination["error"]
    assert (await _recorded(pg_pool, rejected, 1)).success is False

    flaky = await _step(pg_pool, "crm.sync", {"contacts": [{"email": "flaky@x.io"}]})
    run = await _run_tool(tmp_path, api, flaky, 1)
    assert run.code == 1, run.stderr
    assert run.termination["retryable"] is True
    assert (await _recorded(pg_pool, flaky, 1)).success is None  # left for the retry


# --- http.fetch ------------------------------------------------------------------------


async def test_http_fetch_refuses_loopback(
    tmp_path: Path, api: Client, pg_pool: Pool, site: Site
) -> None:
    hits = len(site.hits)
    step = await _step(pg_pool, "http.fetch", {"url": f"{site.url}/page"}, attempts=1)
    run = await _run_tool(tmp_path, api, step, 1)
    assert run.code == 2, run.stderr
    assert "127.0.0.1 is a loopback address" in run.termination["error"]
    assert len(site.hits) == hits  # nothing reached the server
    call = await _recorded(pg_pool, step, 1)
    assert call.success is False
    assert "loopback" in call.error


def _local_site_policy(address: IPAddress) -> str | None:
    """The production policy, plus the one loopback address the test site listens on."""
    return None if address == ipaddress.ip_address("127.0.0.1") else public_only(address)


def _resolve_site(host: str) -> list[str]:
    if host == "site.test":
        return ["127.0.0.1"]
    raise OSError(f"unknown test host {host}")


async def _run_in_process(api: Client, step: Step, tmp_path: Path) -> Any:
    settings = RuntimeSettings(
        gateway_url=str(api.make_url("")).rstrip("/"),
        step_token=step.token(1),
        run_id=str(step.run_id),
        step_id=step.step_id,
        termination_log=str(tmp_path / "termination-in-process"),
        timeout_seconds=20,
    )
    log = JsonLogger(stream=io.StringIO())
    gateway = GatewayClient(settings.gateway_url, settings.step_token, timeout_seconds=20, log=log)
    http = SafeHttpClient(resolver=_resolve_site, policy=_local_site_policy)
    runner = StepRunner(settings, log, gateway, http=http)
    # The runtime is synchronous; the in-process API needs the event loop meanwhile.
    return await asyncio.to_thread(runner.run)


async def test_http_fetch_follows_a_redirect_to_the_page(
    tmp_path: Path, api: Client, pg_pool: Pool, site: Site
) -> None:
    url = f"http://site.test:{site.port}/start"
    step = await _step(pg_pool, "http.fetch", {"url": url, "maxBytes": 4096}, attempts=1)
    outcome = await _run_in_process(api, step, tmp_path)
    assert outcome.code == 0, outcome.message
    result = (await _recorded(pg_pool, step, 1)).result
    assert result["url"] == url
    assert result["finalUrl"] == f"http://site.test:{site.port}/page"
    assert result["status"] == 200
    assert "Refund policy: 30 days." in result["text"]
    assert result["contentType"].startswith("text/html")
    assert result["truncated"] is False
    assert result["bytes"] == len(b"<html><body>Refund policy: 30 days.</body></html>")


async def test_http_fetch_refuses_a_redirect_to_the_metadata_address(
    tmp_path: Path, api: Client, pg_pool: Pool, site: Site
) -> None:
    url = f"http://site.test:{site.port}/to-metadata"
    step = await _step(pg_pool, "http.fetch", {"url": url}, attempts=1)
    outcome = await _run_in_process(api, step, tmp_path)
    assert outcome.code == 2
    assert "169.254.169.254 is a link-local address" in outcome.message["error"]
    call = await _recorded(pg_pool, step, 1)
    assert call.success is False
    assert "link-local" in call.error
