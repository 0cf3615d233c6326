"""The API's error middleware, request ids and body parsing, without real backends."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sba_api.app import create_app
from sba_api.keys import Services
from sba_api.logs import JsonFormatter
from sba_api.services.gateway import GatewayService
from sba_api.services.runs import RunService
from sba_api.services.system import SystemService
from sba_api.services.tool_catalog import ToolCatalogService
from sba_api.settings import AuthSettings, HttpSettings, Settings
from sba_core.auth.dev_tokens import mint_dev_token
from sba_core.tools.registry import builtin_registry

SECRET = "unit-test-secret-0123456789"
JWT_SECRET = "unit-test-jwt-secret-0123456789abcdef"
MEMBER = {
    "Authorization": "Bearer "
    + mint_dev_token(JWT_SECRET, tenant="acme", user="ann", roles=["member"])
}


def _settings() -> Settings:
    return Settings(
        http=HttpSettings(max_body_bytes=4096), auth=AuthSettings(hs256_secret=JWT_SECRET)
    )


def _services() -> Services:
    registry = ToolCatalogService(None, builtin_registry())
    nothing = cast(Any, None)
    return Services(
        runs=RunService(nothing, nothing, registry),
        events=nothing,
        artifacts=nothing,
        knowledge=nothing,
        gateway=GatewayService(SECRET, nothing, registry, nothing, nothing),
        system=SystemService(nothing, nothing, registry, any_tenant),
        tenants=nothing,
        audit=nothing,
        stream_tokens=nothing,
    )


async def any_tenant(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}}


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("kaboom")


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(_settings(), services=_services())
    app.router.add_get("/boom", _boom)
    async with TestClient(TestServer(app), headers=MEMBER) as test_client:
        yield test_client


def _assert_error_shape(body: dict[str, Any], code: str) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)
    return cast(dict[str, Any], error)


async def test_unknown_route_is_404_in_error_shape(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nope", headers={"X-Request-ID": "abc-123"})
    assert resp.status == 404
    assert resp.headers["X-Request-ID"] == "abc-123"
    error = _assert_error_shape(await resp.json(), "not_found")
    assert error["request_id"] == "abc-123"


async def test_wrong_method_is_405_with_allow(client: TestClient[Any, Any]) -> None:
    resp = await client.delete("/api/v1/runs")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    _assert_error_shape(await resp.json(), "method_not_allowed")


async def test_request_id_generated_when_absent_or_insane(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    generated = resp.headers["X-Request-ID"]
    assert len(generated) >= 16
    resp = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
    assert resp.headers["X-Request-ID"] != "bad id\twith spaces"
    assert " " not in resp.headers["X-Request-ID"]


async def test_unhandled_exception_is_500_and_logged(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert resp.status == 500
    error = _assert_error_shape(await resp.json(), "internal_error")
    assert "kaboom" not in error["message"]
    assert error["request_id"] == "req-500"
    records = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert records, "the 500 must be logged"
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "req-500"
    assert "kaboom" in line["exc"]


async def test_non_json_content_type_is_415(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/v1/runs", data="tenant=acme", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    _assert_error_shape(await resp.json(), "unsupported_media_type")


async def test_malformed_json_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/v1/runs", data=b'{"tenant": "acme",', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    _assert_error_shape(await resp.json(), "invalid_json")


async def test_invalid_fields_are_listed_with_camel_case_locs(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post(
        "/api/v1/runs",
        json={"tenant": "Not A Label", "options": {"topK": 0, "maxSteps": "x"}},
    )
    assert resp.status == 400
    error = _assert_error_shape(await resp.json(), "validation_error")
    locs = {d["loc"] for d in error["details"]}
    assert {"tenant", "prompt", "options.topK", "options.maxSteps"} <= locs
    assert all(d["msg"] for d in error["details"])


async def test_unknown_field_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/api/v1/runs", json={"tenant": "acme", "prompt": "hi", "bogus": 1})
    assert resp.status == 400
    error = _assert_error_shape(await resp.json(), "validation_error")
    assert error["details"] == [{"loc": "bogus", "msg": "unknown field"}]


async def test_explicit_plan_is_checked_before_anything_is_created(
    client: TestClient[Any, Any],
) -> None:
    # Bad params for a known tool: the planner's validate_steps refuses it.
    resp = await client.post(
        "/api/v1/runs",
        json={
            "tenant": "acme",
            "prompt": "hi",
            "plan": [{"id": "s1", "tool": "knowledge.search", "params": {"query": ""}}],
        },
    )
    assert resp.status == 400
    error = _assert_error_shape(await resp.json(), "invalid_plan")
    assert "query" in error["message"]
    # Unknown tool: refused against the tenant's catalog, naming the tool.
    resp = await client.post(
        "/api/v1/runs",
        json={"tenant": "acme", "prompt": "hi", "plan": [{"tool": "shell.exec"}]},
    )
    assert resp.status == 400
    error = _assert_error_shape(await resp.json(), "invalid_plan")
    assert "unknown tool 'shell.exec'" in error["message"]
    # Not even a tool name: refused by the model with the field named.
    resp = await client.post(
        "/api/v1/runs",
        json={"tenant": "acme", "prompt": "hi", "plan": [{"tool": "Shell Exec!"}]},
    )
    assert resp.status == 400
    error = _assert_error_shape(await resp.json(), "validation_error")
    assert [d["loc"] for d in error["details"]] == ["plan.0.tool"]


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/api/v1/runs", json={"tenant": "acme", "prompt": "x" * 10_000})
    assert resp.status == 413
    _assert_error_shape(await resp.json(), "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post(
        "/api/v1/runs", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413


async def test_list_runs_query_is_validated(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/runs?limit=1000&tenant=Not%20A%20Label")
    assert resp.status == 400
    error = _assert_error_shape(await resp.json(), "validation_error")
    assert {d["loc"] for d in error["details"]} == {"tenant", "limit"}


async def test_gateway_refuses_missing_and_bad_tokens(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/internal/v1/step")
    assert resp.status == 401
    _assert_error_shape(await resp.json(), "invalid_step_token")
    resp = await client.get("/internal/v1/step", headers={"Authorization": "Bearer not.a.jwt"})
    assert resp.status == 401
    _assert_error_shape(await resp.json(), "invalid_step_token")


async def test_tools_catalog(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/tools")
    assert resp.status == 200
    names = [tool["name"] for tool in (await resp.json())["items"]]
    assert names == sorted(names)
    assert {"knowledge.search", "render.document", "task.create", "crm.sync", "http.fetch"} <= set(
        names
    )


async def test_metrics_count_requests_by_route(client: TestClient[Any, Any]) -> None:
    await client.get("/healthz")
    await client.get("/nope")
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'orchestrator_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "orchestrator_request_duration_seconds_bucket" in text
    assert "orchestrator_sse_streams_open" in text


async def test_docs_page_points_at_openapi(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "/openapi.json" in await resp.text()
