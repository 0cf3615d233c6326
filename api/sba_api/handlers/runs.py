"""/api/v1/runs: create, read and list runs."""

from __future__ import annotations

from aiohttp import web

from sba_api.errors import ServiceUnavailable
from sba_api.handlers._common import json_response, parse_query, principal, read_json, services
from sba_api.schemas import RunListQuery, RunRequest
from sba_api.services.access import scope_tenant


async def create_run(request: web.Request) -> web.Response:
    who = principal(request)
    spec = await read_json(request, RunRequest, defaults={"tenant": who.tenant})
    scope_tenant(who, spec.tenant)
    spec.user = who.user  # the token says who asked, not the body
    created = await services(request).runs.create(spec)
    return json_response(created, status=201, headers={"Location": created.links.self_})


async def preview_plan(request: web.Request) -> web.Response:
    who = principal(request)
    spec = await read_json(request, RunRequest, defaults={"tenant": who.tenant})
    scope_tenant(who, spec.tenant)
    plans = services(request).plans
    if plans is None:
        raise ServiceUnavailable("plan previews are not configured")
    return json_response(await plans.preview(spec))


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    await services(request).runs.authorize(principal(request), run_id)
    view = await services(request).runs.get(run_id)
    return json_response(view)


async def list_runs(request: web.Request) -> web.Response:
    query = parse_query(request, RunListQuery)
    tenant = scope_tenant(principal(request), query.tenant)
    page = await services(request).runs.list_runs(tenant, limit=query.limit, cursor=query.cursor)
    return json_response(page)


async def create_stream_token(request: web.Request) -> web.Response:
    token = await services(request).stream_tokens.mint(
        principal(request), request.match_info["run_id"]
    )
    return json_response(token, status=201, headers={"Cache-Control": "no-store"})
