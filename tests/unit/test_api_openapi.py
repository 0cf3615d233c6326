"""The generated OpenAPI document lists every route with its models."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from sba_api.app import create_app
from sba_api.openapi import build_openapi
from sba_api.routes import ROUTES, TAGS
from sba_api.settings import Settings


def _doc() -> dict[str, Any]:
    return build_openapi(ROUTES, title="t", version="1")


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def test_every_route_is_documented() -> None:
    doc = _doc()
    assert doc["openapi"].startswith("3.1")
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path], route.path
    # and nothing else
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in ROUTES}
    operation_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_components_hold_the_models_and_refs_resolve() -> None:
    doc = _doc()
    schemas = doc["components"]["schemas"]
    for name in ("RunRequest", "RunCreated", "RunView", "RunList", "ErrorBody", "StepResultIn"):
        assert any(key == name or key.startswith(f"{name}-") for key in schemas), name
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    spec = next(v for k, v in schemas.items() if k.startswith("RunRequest"))
    assert {"tenant", "prompt"} <= set(spec["required"])
    assert "options" in spec["properties"]
    error = schemas["ErrorInfo"]
    assert set(error["properties"]) == {"code", "message", "details", "request_id"}


def test_routes_reference_their_models() -> None:
    doc = _doc()
    create = doc["paths"]["/api/v1/runs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RunRequest"
    ) or "RunRequest" in str(create["requestBody"])
    assert "RunCreated" in str(create["responses"]["201"])
    assert "ErrorBody" in str(create["responses"]["400"])
    assert "ErrorBody" in str(create["responses"]["500"])
    listing = doc["paths"]["/api/v1/runs"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["tenant"]["required"] is False  # the caller's tenant by default
    assert params["limit"]["required"] is False
    events = doc["paths"]["/api/v1/runs/{run_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {p["name"] for p in events["parameters"]} >= {"run_id", "lastEventId", "Last-Event-ID"}
    step = doc["paths"]["/internal/v1/step"]["get"]
    assert step["security"] == [{"stepToken": []}]
    for path, ops in doc["paths"].items():
        for name in re.findall(r"\{(\w+)\}", path):
            for op in ops.values():
                assert any(p["in"] == "path" and p["name"] == name for p in op["parameters"])


async def test_openapi_is_served() -> None:
    app = create_app(Settings(), services=None)
    app.cleanup_ctx.clear()  # no backends needed to serve the document
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        doc = await resp.json()
        assert "/api/v1/runs" in doc["paths"]
        assert resp.headers["X-Request-ID"]


def test_bearer_routes_declare_security_permission_and_auth_errors() -> None:
    doc = _doc()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    by_op = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    for route in ROUTES:
        op = by_op[route.operation_id]
        if route.public:
            assert op["security"] == []
            continue
        if route.step_token:
            assert op["security"] == [{"stepToken": []}]
            continue
        assert route.permission is not None, route.path
        assert {"bearerAuth": []} in op["security"]
        assert op["x-permission"] == route.permission.value
        assert {"401", "403", "429"} <= set(op["responses"])
        assert "Retry-After" in op["responses"]["429"]["headers"]
    events = by_op["streamRunEvents"]
    assert {"streamToken": []} in events["security"]
    assert by_op["createRun"]["x-permission"] == "runs:create"
    assert by_op["createTenant"]["x-permission"] == "tenants:admin"


def test_the_gateway_protocol_for_user_tools_is_documented() -> None:
    doc = build_openapi(ROUTES, title="t", version="1", tags=TAGS)
    (gateway,) = [t for t in doc["tags"] if t["name"] == "gateway"]
    assert "stdin" in gateway["description"]
    assert "/internal/v1/step/progress" in gateway["description"]
    progress = doc["paths"]["/internal/v1/step/progress"]["post"]
    assert progress["tags"] == ["gateway"]
    assert {"200", "409"} <= set(progress["responses"])
