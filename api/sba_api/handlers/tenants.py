"""/api/v1/tenants: the Tenant resource through the API, and a tenant's usage."""

from __future__ import annotations

from aiohttp import web

from sba_api.handlers._common import json_response, parse_query, principal, read_json, services
from sba_api.schemas import TenantCreateIn, UsageQuery


async def create_tenant(request: web.Request) -> web.Response:
    body = await read_json(request, TenantCreateIn)
    created = await services(request).tenants.create(principal(request), body)
    return json_response(created, status=201, headers={"Location": f"/api/v1/tenants/{body.name}"})


async def get_tenant(request: web.Request) -> web.Response:
    tenant = await services(request).tenants.get(principal(request), request.match_info["tenant"])
    return json_response(tenant)


async def delete_tenant(request: web.Request) -> web.Response:
    deleted = await services(request).tenants.delete(
        principal(request), request.match_info["tenant"]
    )
    return json_response(deleted, status=202)


async def tenant_usage(request: web.Request) -> web.Response:
    query = parse_query(request, UsageQuery)
    usage = await services(request).tenants.usage(
        principal(request), request.match_info["tenant"], query.since
    )
    return json_response(usage)
