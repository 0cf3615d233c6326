"""/internal/v1: the tool gateway. Every route needs a step token."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from sba_api.context import current_request_id, note_request
from sba_api.errors import BadRequest, ErrorItem, ServiceUnavailable
from sba_api.handlers._common import json_response, read_body, read_json, services, settings
from sba_api.schemas import StepProgressIn, StepResultIn
from sba_core.step_token import StepClaims
from sba_core.tools.contracts import KnowledgeSearchParams

TITLE_HEADER = "X-Artifact-Title"
MAX_TITLE_CHARS = 200


def _claims(request: web.Request) -> StepClaims:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    claims = services(request).gateway.authenticate(bearer)
    note_request(tenant_id=claims.tenant, run_id=claims.run_id)
    return claims


async def get_step(request: web.Request) -> web.Response:
    claims = _claims(request)
    return json_response(await services(request).gateway.step_input(claims))


async def knowledge_search(request: web.Request) -> web.Response:
    claims = _claims(request)
    params = await read_json(request, KnowledgeSearchParams)
    return json_response(await services(request).gateway.knowledge_search(claims, params))


async def upload_artifact(request: web.Request) -> web.Response:
    claims = _claims(request)
    title = unquote(request.headers.get(TITLE_HEADER, "")).strip()
    if not title or len(title) > MAX_TITLE_CHARS:
        raise BadRequest(
            f"{TITLE_HEADER} must hold a title of 1 to {MAX_TITLE_CHARS} characters",
            details=[ErrorItem(loc=TITLE_HEADER, msg="missing or too long")],
        )
    content_type = request.headers.get("Content-Type", "").strip() or "application/octet-stream"
    if len(content_type) > 200 or "/" not in content_type:
        raise BadRequest(
            "Content-Type must be a media type",
            details=[ErrorItem(loc="Content-Type", msg="not a media type")],
        )
    content = await read_body(request, settings(request).http.max_artifact_bytes)
    stored = await services(request).gateway.upload_artifact(
        claims, title=title, content_type=content_type, content=content
    )
    return json_response(stored, status=201)


async def generate(request: web.Request) -> web.Response:
    claims = _claims(request)
    models = services(request).models
    if models is None:
        raise ServiceUnavailable("the model gateway is not configured")
    return json_response(await models.generate(claims))


async def post_step_progress(request: web.Request) -> web.Response:
    claims = _claims(request)
    body = await read_json(request, StepProgressIn)
    service = services(request).progress
    if service is None:
        raise ServiceUnavailable("progress reports are not available in this API process")
    return json_response(await service.report(claims, body))


async def post_step_result(request: web.Request) -> web.Response:
    claims = _claims(request)
    body = await read_json(request, StepResultIn)
    recorded = await services(request).gateway.record_result(
        claims, body, request_id=current_request_id()
    )
    return json_response(recorded)
