"""/api/v1/runs: create, read and list runs."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from sba_api.errors import from_validation_error
from sba_api.handlers._common import json_response, read_json, services
from sba_api.schemas import AgentRunSpec, RunListQuery


async def create_run(request: web.Request) -> web.Response:
    spec = await read_json(request, AgentRunSpec)
    created = await services(request).runs.create(spec)
    return json_response(created, status=201, headers={"Location": created.links.self_})


async def get_run(request: web.Request) -> web.Response:
    view = await services(request).runs.get(request.match_info["run_id"])
    return json_response(view)


async def list_runs(request: web.Request) -> web.Response:
    try:
        query = RunListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise from_validation_error(exc, what="query string") from exc
    page = await services(request).runs.list_runs(
        query.tenant, limit=query.limit, cursor=query.cursor
    )
    return json_response(page)
