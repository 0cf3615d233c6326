"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Handlers parse with the same models the document describes, so the two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from sba_api.schemas import ErrorBody
from sba_core.auth.permissions import Permission

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REF_TEMPLATE = "#/components/schemas/{model}"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
IDEMPOTENCY_KEY_PATTERN: Final = r"^[\x20-\x7e]{1,200}$"
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad request: invalid JSON, fields or query",
    401: "Missing, invalid or expired step token",
    403: "Not allowed for this step's tool",
    404: "Not found",
    409: "Conflict: the resource is not in a state that allows this",
    413: "Body too large",
    415: "Content-Type is not application/json",
    422: "Result does not fit the tool's contract (recorded as failed)",
    500: "Internal error",
    502: "A dependency answered with an error",
    503: "A dependency is unavailable",
}


@dataclass(frozen=True)
class Media:
    """A response or request body that is not a JSON model."""

    media_type: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""


Body = type[BaseModel] | Media | None


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    request: Body = None
    query: type[BaseModel] | None = None
    responses: Mapping[int, Body] = field(default_factory=lambda: {200: None})
    errors: Sequence[int] = ()
    step_token: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers the route reads, name -> description."""
    path_formats: Mapping[str, str] = field(default_factory=dict)
    permission: Permission | None = None
    """What a bearer token must grant; every route that is neither public nor step-token
    authenticated names one (`add_routes` refuses a route that does not)."""
    public: bool = False
    """No authentication at all (health, metrics, this document)."""
    stream_token: bool = False
    """Also accepts a run-scoped stream token as `?access_token=` (EventSource clients)."""
    idempotent: bool = False
    """Honours `Idempotency-Key` (`add_routes` wraps the handler; see
    sba_api.services.idempotency): documents the header and the 409s it can cause."""

    @property
    def bearer(self) -> bool:
        return not self.public and not self.step_token


_BEARER_ERRORS: Final = {
    401: "Missing, invalid or expired bearer token",
    403: "The token lacks the permission, or the resource belongs to another tenant",
    429: "Rate limit or stream cap exceeded; retry after Retry-After seconds",
}


def _models(routes: Sequence[RouteSpec]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorBody, "serialization"): None
    }
    for route in routes:
        if isinstance(route.request, type):
            wanted[(route.request, "validation")] = None
        for body in route.responses.values():
            if isinstance(body, type):
                wanted[(body, "serialization")] = None
    return list(wanted)


def _parameters(route: RouteSpec, query_schema: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(route.path):
        schema: dict[str, Any] = {"type": "string"}
        if name in route.path_formats:
            schema["format"] = route.path_formats[name]
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if query_schema is not None:
        required = set(query_schema.get("required", []))
        for name, schema in query_schema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in schema.items() if k != "description"},
            }
            if "description" in schema:
                param["description"] = schema["description"]
            params.append(param)
    if route.idempotent:
        params.append(
            {
                "name": IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": "Makes the request safe to retry (1-200 printable ASCII"
                " characters, unique per tenant, kept 24 h): a replay with the same body"
                " returns the first response with `Idempotent-Replayed: true`; the same key"
                " with another body or route is 409 `idempotency_key_reused`; a duplicate"
                " of a request still in flight waits for it, or gets 409"
                " `idempotency_request_in_progress` with Retry-After.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                },
            }
        )
    for name, description in route.headers.items():
        params.append(
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": description,
                "schema": {"type": "string"},
            }
        )
    return params


def build_openapi(
    routes: Sequence[RouteSpec],
    *,
    title: str,
    version: str,
    server_url: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`tags`: tag name -> description (e.g. a protocol's overview), listed in order."""
    keyed, top = models_json_schema(_models(routes), ref_template=REF_TEMPLATE)
    components: dict[str, Any] = dict(top.get("$defs", {}))
    mode_by_location: dict[str, JsonSchemaMode] = {
        "request": "validation",
        "response": "serialization",
    }

    def ref(model: type[BaseModel], where: Literal["request", "response"]) -> dict[str, Any]:
        return dict(keyed[(model, mode_by_location[where])])

    def content(body: Body, where: Literal["request", "response"]) -> dict[str, Any] | None:
        if body is None:
            return None
        if isinstance(body, Media):
            return {body.media_type: {"schema": dict(body.schema)}}
        return {"application/json": {"schema": ref(body, where)}}

    paths: dict[str, Any] = {}
    for route in routes:
        query_schema = (
            route.query.model_json_schema(by_alias=True, mode="validation")
            if route.query is not None
            else None
        )
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
        }
        parameters = _parameters(route, query_schema)
        if parameters:
            operation["parameters"] = parameters
        request_content = content(route.request, "request")
        if request_content is not None:
            operation["requestBody"] = {"required": True, "content": request_content}
        responses: dict[str, Any] = {}
        for status, body in sorted(route.responses.items()):
            entry: dict[str, Any] = {
                "description": (
                    body.description
                    if isinstance(body, Media) and body.description
                    else _STATUS_TEXT.get(status, "")
                )
            }
            response_content = content(body, "response")
            if response_content is not None:
                entry["content"] = response_content
            responses[str(status)] = entry
        bearer_errors = set(_BEARER_ERRORS) if route.bearer else set()
        idempotency_errors = {400, 409} if route.idempotent else set()
        for status in sorted({*route.errors, *bearer_errors, *idempotency_errors, 500}):
            description = _STATUS_TEXT.get(status, "Error")
            if route.bearer:
                description = _BEARER_ERRORS.get(status, description)
            responses[str(status)] = {
                "description": description,
                "content": {"application/json": {"schema": ref(ErrorBody, "response")}},
            }
            if status == 429:
                responses[str(status)]["headers"] = {
                    "Retry-After": {
                        "description": "Seconds to wait before retrying.",
                        "schema": {"type": "integer"},
                    }
                }
        operation["responses"] = responses
        if route.step_token:
            operation["security"] = [{"stepToken": []}]
        elif route.public:
            operation["security"] = []
        else:
            operation["security"] = [{"bearerAuth": []}]
            if route.stream_token:
                operation["security"].append({"streamToken": []})
            if route.permission is not None:
                operation["x-permission"] = route.permission.value
                operation["description"] = f"Requires the `{route.permission.value}` permission."
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Kubernetes-native orchestrator for AI-agent runs. Every response "
            "carries X-Request-ID; every error has the ErrorBody shape.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Access token (HS256 from the shared secret, or RS256/ES256 "
                    "from the OIDC provider's JWKS) with `sub`, the tenant claim and `roles`.",
                },
                "streamToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": "Run-scoped stream token from "
                    "POST /api/v1/runs/{run_id}/stream-token (60 s; that run's events only).",
                },
                "stepToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Step token minted by the operator for one tool-step attempt.",
                },
            },
        },
    }
    if tags:
        document["tags"] = [{"name": n, "description": d} for n, d in tags.items()]
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
