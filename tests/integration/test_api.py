"""The API in-process (aiohttp test server) against real Postgres, Redis and Kubernetes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from redis.asyncio import Redis

from sba_api.app import create_app
from sba_api.settings import (
    AuthSettings,
    DatabaseSettings,
    GatewaySettings,
    KubernetesSettings,
    RedisSettings,
    Settings,
    SseSettings,
)
from sba_core.auth.dev_tokens import mint_dev_token
from sba_core.group import AGENTRUN_PLURAL, GROUP, LABEL_TENANT, VERSION
from sba_core.step_token import StepClaims, mint_step_token
from sba_store import eventbus
from sba_store.audit import AuditRepository
from sba_store.db import Pool
from sba_store.events import EventRepository
from sba_store.records import NewEvent
from sba_store.runs import RunRepository
from sba_store.tool_calls import ToolCallRepository
from tests.fixtures.controlplane import Kubectl

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-step-token-secret-0123456789"
JWT_SECRET = "integration-jwt-secret-0123456789abcdef"
HEARTBEAT = 0.5

Client = TestClient[web.Request, web.Application]


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    applied = kubectl("apply", "-f", str(REPO_ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    waited = kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/agentruns.sba-agentic.io"
    )
    assert waited.returncode == 0, waited.stderr


@pytest.fixture(scope="session")
def tenant(kube_api: client.ApiClient, crds: None) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"it{uuid.uuid4().hex[:6]}"
    namespace = f"tenant-{name}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    yield name
    try:
        core.delete_namespace(namespace)
    except ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture(scope="session")
def api_settings(app_dsn: str, redis_url: str, kubeconfig: Path) -> Settings:
    return Settings(
        database=DatabaseSettings(url=app_dsn),
        redis=RedisSettings(url=redis_url),
        kubernetes=KubernetesSettings(kubeconfig=kubeconfig),
        gateway=GatewaySettings(step_token_secret=SECRET),
        sse=SseSettings(heartbeat_seconds=HEARTBEAT, retry_ms=1500, batch_size=100),
        auth=AuthSettings(hs256_secret=JWT_SECRET),
    )


def _bearer(
    tenant: str, user: str = "it-user", roles: tuple[str, ...] = ("member",)
) -> dict[str, str]:
    """An access token for `tenant` (the `api` client sends one for the session's tenant)."""
    token = mint_dev_token(JWT_SECRET, tenant=tenant, user=user, roles=roles)
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(api_settings: Settings, crds: None, tenant: str) -> AsyncIterator[Client]:
    server = TestServer(create_app(api_settings))
    async with TestClient(server, headers=_bearer(tenant)) as test_client:
        yield test_client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    conn = Redis.from_url(redis_url)
    yield conn
    await conn.aclose()


@pytest.fixture
def custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


async def _create_run(
    api: Client, tenant: str, headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    resp = await api.post(
        "/api/v1/runs", json={"tenant": tenant, "prompt": "What is SBA?", **extra}, headers=headers
    )
    body = await resp.json()
    assert resp.status == 201, body
    return dict(body)


def _error(body: dict[str, Any], code: str) -> dict[str, Any]:
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == code, body
    return dict(body["error"])


# -- SSE client helper ------------------------------------------------------------


class SseReader:
    """Parses a text/event-stream response incrementally."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp
        self.events: list[dict[str, str]] = []
        self.comments: list[str] = []
        self.retry: str | None = None
        self.eof = False
        self._current: dict[str, str] = {}

    async def read_until(
        self, done: Callable[[SseReader], bool], within: float = 10.0
    ) -> SseReader:
        async def loop() -> None:
            while not done(self):
                line = await self.resp.content.readline()
                if not line:
                    self.eof = True
                    return
                self._line(line.decode().rstrip("\n"))

        await asyncio.wait_for(loop(), within)
        return self

    def _line(self, line: str) -> None:
        if line == "":
            if "data" in self._current:
                self.events.append(self._current)
            self._current = {}
            return
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "retry":
            self.retry = value
        elif field == "data" and "data" in self._current:
            self._current["data"] += "\n" + value
        else:
            self._current[field] = value

    @property
    def seqs(self) -> list[int]:
        return [int(event["id"]) for event in self.events]

    def has(self, n: int) -> Callable[[SseReader], bool]:
        return lambda reader: len(reader.events) >= n


async def _append(
    pool: Pool, redis: Redis, run_id: str, tenant: str, types: list[str], *, announce: bool = True
) -> list[int]:
    records = await EventRepository(pool).append(
        uuid.UUID(run_id),
        tenant,
        [NewEvent(dedupe_key=f"{t}:{uuid.uuid4().hex}", type=t, payload={"n": t}) for t in types],
    )
    if announce and records:
        await eventbus.announce(redis, run_id, records[-1].seq)
    return [r.seq for r in records]


# -- runs -------------------------------------------------------------------------


async def test_create_run_creates_the_agentrun(
    api: Client, tenant: str, custom: client.CustomObjectsApi, pg_pool: Pool
) -> None:
    resp = await api.post(
        "/api/v1/runs",
        json={"tenant": tenant, "prompt": "Summarise the handbook.", "user": "mallory"},
        headers={"X-Request-ID": "create-1", **_bearer(tenant, user="alice")},
    )
    body = await resp.json()
    assert resp.status == 201, body
    assert resp.headers["X-Request-ID"] == "create-1"
    run_id = body["id"]
    assert body["tenant"] == tenant
    assert body["namespace"] == f"tenant-{tenant}"
    assert body["phase"] == "pending"
    assert body["name"].startswith("run-")
    assert body["links"]["self"] == f"/api/v1/runs/{run_id}"
    assert body["links"]["events"] == f"/api/v1/runs/{run_id}/events"
    assert resp.headers["Location"] == f"/api/v1/runs/{run_id}"

    obj = custom.get_namespaced_custom_object(
        GROUP, VERSION, body["namespace"], AGENTRUN_PLURAL, body["name"]
    )
    assert obj["metadata"]["uid"] == run_id
    assert obj["metadata"]["labels"][LABEL_TENANT] == tenant
    assert obj["spec"]["prompt"] == "Summarise the handbook."
    assert obj["spec"]["user"] == "alice"  # the token's subject, not the body's claim

    audit = await AuditRepository(pg_pool).list_for_tenant(tenant)
    entry = next(a for a in audit if a.payload.get("runId") == run_id)
    assert (entry.action, entry.actor, entry.request_id) == ("run.create", "alice", "create-1")

    record = await RunRepository(pg_pool).get(uuid.UUID(run_id), tenant_id=tenant)
    assert record is not None
    assert (record.namespace, record.name, record.tenant_id) == (
        body["namespace"],
        body["name"],
        tenant,
    )


async def test_bad_bodies_name_the_field(api: Client, tenant: str) -> None:
    resp = await api.post("/api/v1/runs", json={"tenant": tenant, "prompt": ""})
    assert resp.status == 400
    error = _error(await resp.json(), "validation_error")
    assert [d["loc"] for d in error["details"]] == ["prompt"]

    resp = await api.post(
        "/api/v1/runs", json={"tenant": tenant, "prompt": "x", "options": {"maxSteps": 99}}
    )
    assert resp.status == 400
    error = _error(await resp.json(), "validation_error")
    assert [d["loc"] for d in error["details"]] == ["options.maxSteps"]


async def test_explicit_plan_with_unknown_tool_or_bad_params_is_400(
    api: Client, tenant: str
) -> None:
    resp = await api.post(
        "/api/v1/runs",
        json={"tenant": tenant, "prompt": "x", "plan": [{"tool": "rm.rf", "params": {}}]},
    )
    assert resp.status == 400
    error = _error(await resp.json(), "invalid_plan")
    assert "unknown tool 'rm.rf'" in error["message"]

    resp = await api.post(
        "/api/v1/runs",
        json={
            "tenant": tenant,
            "prompt": "x",
            "plan": [
                {"id": "search", "tool": "knowledge.search", "params": {"query": "a"}},
                {"id": "render", "tool": "render.document", "params": {"sources": ["search"]}},
            ],
        },
    )
    assert resp.status == 400
    error = _error(await resp.json(), "invalid_plan")
    assert "title" in error["message"]

    ok = await _create_run(
        api,
        tenant,
        plan=[{"id": "search", "tool": "knowledge.search", "params": {"query": "a"}}],
    )
    assert ok["phase"] == "pending"


async def test_unknown_tenant_is_404(api: Client) -> None:
    resp = await api.post("/api/v1/runs", json={"tenant": "no-such-tenant", "prompt": "x"})
    assert resp.status == 403  # not the caller's tenant
    _error(await resp.json(), "tenant_forbidden")
    resp = await api.post("/api/v1/runs", json={"prompt": "x"}, headers=_bearer("no-such-tenant"))
    assert resp.status == 404
    _error(await resp.json(), "tenant_not_found")


async def test_unknown_run_is_404(api: Client) -> None:
    for raw in (str(uuid.uuid4()), "not-a-uuid"):
        resp = await api.get(f"/api/v1/runs/{raw}")
        assert resp.status == 404
        _error(await resp.json(), "run_not_found")
    resp = await api.get(f"/api/v1/runs/{uuid.uuid4()}/events")
    assert resp.status == 404
    _error(await resp.json(), "run_not_found")


async def test_get_run_reads_live_status_then_falls_back_to_the_database(
    api: Client, tenant: str, custom: client.CustomObjectsApi
) -> None:
    created = await _create_run(api, tenant)
    resp = await api.get(f"/api/v1/runs/{created['id']}")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["source"] == "cluster"
    assert body["phase"] == "pending"
    assert body["prompt"] == "What is SBA?"

    status = {
        "phase": "executing",
        "currentStep": "search (1/2)",
        "steps": [{"id": "search", "index": 0, "tool": "knowledge.search", "phase": "running"}],
        "usage": {"toolCalls": 1, "tokens": 0, "runSeconds": 1.5},
    }
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, created["namespace"], AGENTRUN_PLURAL, created["name"], {"status": status}
    )
    body = await (await api.get(f"/api/v1/runs/{created['id']}")).json()
    assert body["phase"] == "executing"
    assert body["currentStep"] == "search (1/2)"
    assert body["steps"][0]["id"] == "search"
    assert body["usage"]["toolCalls"] == 1

    custom.delete_namespaced_custom_object(
        GROUP, VERSION, created["namespace"], AGENTRUN_PLURAL, created["name"]
    )
    for _ in range(50):
        body = await (await api.get(f"/api/v1/runs/{created['id']}")).json()
        if body["source"] == "database":
            break
        await asyncio.sleep(0.1)
    assert body["source"] == "database"
    assert body["id"] == created["id"]


async def test_list_runs_is_paginated_newest_first(api: Client, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    name = f"ls{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"tenant-{name}")))
    try:
        auth = _bearer(name)
        ids = [(await _create_run(api, name, auth))["id"] for _ in range(3)]
        resp = await api.get(f"/api/v1/runs?tenant={name}&limit=2", headers=auth)
        page1 = await resp.json()
        assert resp.status == 200, page1
        assert [item["id"] for item in page1["items"]] == ids[::-1][:2]
        assert page1["nextCursor"]
        resp = await api.get(f"/api/v1/runs?limit=2&cursor={page1['nextCursor']}", headers=auth)
        page2 = await resp.json()
        assert [item["id"] for item in page2["items"]] == ids[:1]
        assert page2["nextCursor"] is None
        resp = await api.get(f"/api/v1/runs?tenant={name}&cursor=garbage", headers=auth)
        assert resp.status == 400
        _error(await resp.json(), "invalid_cursor")
    finally:
        core.delete_namespace(f"tenant-{name}")


# -- SSE --------------------------------------------------------------------------


async def test_sse_replays_tails_resumes_and_ends(
    api: Client, tenant: str, pg_pool: Pool, redis: Redis
) -> None:
    run = await _create_run(api, tenant)
    run_id = run["id"]
    assert await _append(pg_pool, redis, run_id, tenant, ["pending", "planning", "plan_ready"]) == [
        1,
        2,
        3,
    ]

    resp = await api.get(f"/api/v1/runs/{run_id}/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert resp.headers["X-Request-ID"]
    reader = SseReader(resp)
    await reader.read_until(reader.has(3))
    assert reader.retry == "1500"
    assert reader.seqs == [1, 2, 3]
    assert [e["event"] for e in reader.events] == ["pending", "planning", "plan_ready"]
    first = json.loads(reader.events[0]["data"])
    assert first["eventId"] == f"{run_id}:1"
    assert first["seq"] == 1
    assert first["runId"] == run_id
    assert first["tenantId"] == tenant
    assert first["type"] == "pending"

    # Live: announced events arrive in order.
    await _append(pg_pool, redis, run_id, tenant, ["executing"])
    await _append(pg_pool, redis, run_id, tenant, ["step_started"])
    await reader.read_until(reader.has(5))
    assert reader.seqs == [1, 2, 3, 4, 5]
    # A missed Redis announcement loses nothing: the heartbeat re-read finds it.
    await _append(pg_pool, redis, run_id, tenant, ["step_succeeded"], announce=False)
    await reader.read_until(reader.has(6), within=5 * HEARTBEAT + 5)
    assert reader.seqs == [1, 2, 3, 4, 5, 6]
    resp.close()

    # Reconnect after 4: exactly the rest, then the terminal event ends the stream.
    resp = await api.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "4"})
    reader = SseReader(resp)
    await reader.read_until(reader.has(2))
    assert reader.seqs == [5, 6]
    await _append(pg_pool, redis, run_id, tenant, ["completed"])
    await reader.read_until(lambda r: r.eof)
    assert reader.seqs == [5, 6, 7]
    assert reader.events[-1]["event"] == "completed"

    # Our own event id format and the query parameter work too.
    resp = await api.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": f"{run_id}:5"})
    reader = await SseReader(resp).read_until(lambda r: r.eof)
    assert reader.seqs == [6, 7]
    resp = await api.get(f"/api/v1/runs/{run_id}/events?lastEventId=6")
    reader = await SseReader(resp).read_until(lambda r: r.eof)
    assert reader.seqs == [7]
    # From the start: everything once, then the end.
    resp = await api.get(f"/api/v1/runs/{run_id}/events")
    reader = await SseReader(resp).read_until(lambda r: r.eof)
    assert reader.seqs == [1, 2, 3, 4, 5, 6, 7]

    # At (or past) the terminal event: 204, so EventSource stops reconnecting.
    for after in ("7", "9"):
        resp = await api.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": after})
        assert resp.status == 204
    resp = await api.get(f"/api/v1/runs/{run_id}/events?lastEventId=7")
    assert resp.status == 204


async def test_sse_sends_heartbeats_when_idle(api: Client, tenant: str) -> None:
    run = await _create_run(api, tenant)
    resp = await api.get(f"/api/v1/runs/{run['id']}/events")
    assert resp.status == 200
    reader = SseReader(resp)
    await reader.read_until(lambda r: len(r.comments) >= 2, within=HEARTBEAT * 6 + 2)
    assert reader.comments[:2] == ["heartbeat", "heartbeat"]
    assert reader.events == []
    resp.close()


async def test_sse_delivers_a_long_log_in_bounded_batches(
    api: Client, tenant: str, pg_pool: Pool, redis: Redis
) -> None:
    run = await _create_run(api, tenant)
    types = ["step_started"] * 249 + ["failed"]
    await _append(pg_pool, redis, run["id"], tenant, types)
    resp = await api.get(f"/api/v1/runs/{run['id']}/events")
    reader = await SseReader(resp).read_until(lambda r: r.eof, within=20)
    assert reader.seqs == list(range(1, 251))
    assert reader.events[-1]["event"] == "failed"


async def test_metrics_count_open_streams(api: Client, tenant: str) -> None:
    run = await _create_run(api, tenant)
    resp = await api.get(f"/api/v1/runs/{run['id']}/events")
    await SseReader(resp).read_until(lambda r: r.retry is not None)
    text = await (await api.get("/metrics")).text()
    gauge = next(
        line for line in text.splitlines() if line.startswith("orchestrator_sse_streams_open ")
    )
    assert float(gauge.split()[1]) >= 1
    resp.close()


# -- knowledge --------------------------------------------------------------------


async def test_knowledge_ingest_and_search(api: Client, tenant: str) -> None:
    resp = await api.post(
        "/api/v1/knowledge/documents",
        json={
            "tenant": tenant,
            "title": "Heliotrope onboarding handbook",
            "content": "New engineers get a heliotrope badge on their first day.\n\n"
            "The on-call rotation starts after six weeks.",
            "source": "handbook.md",
            "metadata": {"team": "platform"},
        },
    )
    body = await resp.json()
    assert resp.status == 201, body
    assert body["chunks"] >= 1
    document_id = body["id"]
    await api.post(
        "/api/v1/knowledge/documents",
        json={"tenant": tenant, "title": "Lunch menu", "content": "Soup on Mondays."},
    )

    resp = await api.post(
        "/api/v1/knowledge/search",
        json={"tenant": tenant, "query": "when do engineers get the heliotrope badge?", "topK": 3},
    )
    result = await resp.json()
    assert resp.status == 200, result
    assert result["hits"][0]["documentId"] == document_id
    assert "heliotrope" in result["hits"][0]["snippet"]

    resp = await api.post(
        "/api/v1/knowledge/search", json={"tenant": "someone-else", "query": "heliotrope"}
    )
    assert resp.status == 403
    resp = await api.post(
        "/api/v1/knowledge/search",
        json={"query": "heliotrope"},
        headers=_bearer("someone-else", roles=("viewer",)),
    )
    assert (await resp.json())["hits"] == []


# -- tool gateway -----------------------------------------------------------------


def _token(run: dict[str, Any], step: str, tool: str, attempt: int = 1, ttl: int = 300) -> str:
    claims = StepClaims(
        run_id=run["id"],
        tenant=run["tenant"],
        namespace=run["namespace"],
        run_name=run["name"],
        step_id=step,
        attempt=attempt,
        tool=tool,
    )
    return mint_step_token(SECRET, claims, ttl)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_gateway_refuses_bad_tokens(api: Client, tenant: str) -> None:
    run = await _create_run(api, tenant)
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        _auth(_token(run, "search", "knowledge.search", ttl=-60)),
        _auth(
            mint_step_token(
                "another-secret-0123456789abcdef-0123456789",
                StepClaims(
                    run_id=run["id"],
                    tenant=tenant,
                    namespace=run["namespace"],
                    run_name=run["name"],
                    step_id="search",
                    attempt=1,
                    tool="knowledge.search",
                ),
                300,
            )
        ),
    ):
        resp = await api.post("/internal/v1/knowledge/search", json={"query": "x"}, headers=headers)
        assert resp.status == 401, headers
        _error(await resp.json(), "invalid_step_token")

    resp = await api.post(
        "/internal/v1/knowledge/search",
        json={"query": "x"},
        headers=_auth(_token(run, "render", "render.document")),
    )
    assert resp.status == 403
    _error(await resp.json(), "forbidden")

    # The tenant comes from the token, never the body.
    resp = await api.post(
        "/internal/v1/knowledge/search",
        json={"query": "x", "tenant": "someone-else"},
        headers=_auth(_token(run, "search", "knowledge.search")),
    )
    assert resp.status == 400


async def test_gateway_step_round_trip(api: Client, tenant: str, pg_pool: Pool) -> None:
    await api.post(
        "/api/v1/knowledge/documents",
        json={"tenant": tenant, "title": "Zephyr guide", "content": "Zephyr runs on Tuesdays."},
    )
    run = await _create_run(api, tenant)
    calls = ToolCallRepository(pg_pool)
    run_uuid = uuid.UUID(run["id"])
    search_params = {"query": "When does zephyr run?", "topK": 2}
    render_params = {"title": "Zephyr", "format": "markdown", "sources": ["search"], "locale": "en"}
    await calls.record_start(
        run_id=run_uuid,
        step_id="search",
        attempt=1,
        tool="knowledge.search",
        tool_version="1.0.0",
        tenant_id=tenant,
        params=search_params,
    )
    search_token = _auth(_token(run, "search", "knowledge.search"))

    # No call recorded for this attempt: 404.
    resp = await api.get(
        "/internal/v1/step", headers=_auth(_token(run, "search", "knowledge.search", 2))
    )
    assert resp.status == 404
    _error(await resp.json(), "step_not_found")

    resp = await api.get("/internal/v1/step", headers=search_token)
    step = await resp.json()
    assert resp.status == 200, step
    assert step == {
        "runId": run["id"],
        "tenant": tenant,
        "stepId": "search",
        "attempt": 1,
        "tool": "knowledge.search",
        "params": search_params,
        "inputs": {},
        "idempotencyKey": f"{run['id']}:search",
        "config": {"egressAllowlist": [], "crmUrl": None},
    }

    resp = await api.post(
        "/internal/v1/knowledge/search", json={"query": "zephyr", "topK": 2}, headers=search_token
    )
    found = await resp.json()
    assert resp.status == 200, found
    assert found["hits"][0]["title"] == "Zephyr guide"

    resp = await api.post(
        "/internal/v1/step/result", json={"success": True, "result": found}, headers=search_token
    )
    recorded = await resp.json()
    assert resp.status == 200, recorded
    assert recorded["recorded"] is True
    # A replay gets the first answer; a different late result changes nothing.
    resp = await api.post(
        "/internal/v1/step/result", json={"success": False, "error": "late"}, headers=search_token
    )
    assert await resp.json() == recorded
    stored = await calls.get(run_uuid, "search", 1, tenant_id=tenant)
    assert stored is not None
    assert stored.success is True
    assert stored.result["hits"][0]["title"] == "Zephyr guide"

    # The render step sees the search result as its input.
    await calls.record_start(
        run_id=run_uuid,
        step_id="render",
        attempt=1,
        tool="render.document",
        tool_version="1.0.0",
        tenant_id=tenant,
        params=render_params,
    )
    render_token = _auth(_token(run, "render", "render.document"))
    step = await (await api.get("/internal/v1/step", headers=render_token)).json()
    assert step["params"] == render_params
    assert step["inputs"]["search"]["hits"][0]["title"] == "Zephyr guide"

    # Artifacts: only a tool with the write:artifacts scope may upload.
    content = b"# Zephyr\n\nZephyr runs on Tuesdays.\n"
    resp = await api.post(
        "/internal/v1/artifacts",
        data=content,
        headers={**search_token, "Content-Type": "text/markdown", "X-Artifact-Title": "Zephyr"},
    )
    assert resp.status == 403
    resp = await api.post(
        "/internal/v1/artifacts",
        data=content,
        headers={
            **render_token,
            "Content-Type": "text/markdown; charset=utf-8",
            "X-Artifact-Title": "Zephyr%20r%C3%A9sum%C3%A9",
        },
    )
    uploaded = await resp.json()
    assert resp.status == 201, uploaded
    assert uploaded["sha256"] == hashlib.sha256(content).hexdigest()
    assert uploaded["sizeBytes"] == len(content)
    assert uploaded["title"] == "Zephyr résumé"

    listing = await (await api.get(f"/api/v1/runs/{run['id']}/artifacts")).json()
    assert [a["id"] for a in listing["items"]] == [uploaded["artifactId"]]
    resp = await api.get(f"/api/v1/runs/{run['id']}/artifacts/{uploaded['artifactId']}")
    assert resp.status == 200
    assert await resp.read() == content
    assert resp.headers["Content-Type"].startswith("text/markdown")
    assert resp.headers["ETag"] == f'"{uploaded["sha256"]}"'
    disposition = resp.headers["Content-Disposition"]
    assert 'filename="Zephyr-resume.md"' in disposition
    assert "filename*=UTF-8''Zephyr%20r%C3%A9sum%C3%A9.md" in disposition
    resp = await api.get(
        f"/api/v1/runs/{run['id']}/artifacts/{uploaded['artifactId']}",
        headers={"If-None-Match": f'"{uploaded["sha256"]}"'},
    )
    assert resp.status == 304
    other = await _create_run(api, tenant)
    resp = await api.get(f"/api/v1/runs/{other['id']}/artifacts/{uploaded['artifactId']}")
    assert resp.status == 404
    _error(await resp.json(), "artifact_not_found")

    # A result that breaks the render contract is recorded as failed and answered 422.
    resp = await api.post(
        "/internal/v1/step/result",
        json={"success": True, "result": {"title": "Zephyr"}},
        headers=render_token,
    )
    assert resp.status == 422
    error = _error(await resp.json(), "result_contract_violation")
    assert "artifactId" in error["message"] or "artifact_id" in error["message"]
    stored = await calls.get(run_uuid, "render", 1, tenant_id=tenant)
    assert stored is not None
    assert stored.success is False
    resp = await api.post(
        "/internal/v1/step/result",
        json={"success": True, "result": {**uploaded}},
        headers=render_token,
    )
    assert resp.status == 422  # the first answer stands


async def test_artifact_upload_limit(api: Client, tenant: str, pg_pool: Pool) -> None:
    run = await _create_run(api, tenant)
    headers = {
        **_auth(_token(run, "render", "render.document")),
        "Content-Type": "application/octet-stream",
        "X-Artifact-Title": "big",
    }
    resp = await api.post(
        "/internal/v1/artifacts", data=b"x" * (10 * 1024 * 1024 + 1), headers=headers
    )
    assert resp.status == 413
    _error(await resp.json(), "payload_too_large")


async def test_readyz(api: Client) -> None:
    resp = await api.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_api_process_starts_and_stops(app_dsn: str, redis_url: str, kubeconfig: Path) -> None:
    """`python -m sba_api` (what `sba-agentic api` runs) serves and exits cleanly on SIGTERM."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": app_dsn,
        "REDIS_URL": redis_url,
        "KUBECONFIG": str(kubeconfig),
        "SBA_STEP_TOKEN_SECRET": SECRET,
        "SBA_JWT_HS256_SECRET": JWT_SECRET,
        "SBA_API_HOST": "127.0.0.1",
        "SBA_API_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sba_api", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the API process never became ready")
            async with session.get(f"http://127.0.0.1:{port}/openapi.json") as resp:
                assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(line.get("route") == "/readyz" and line.get("request_id") for line in lines)
