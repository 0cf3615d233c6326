"""GET /api/v1/audit: the tenant's audit log, newest first."""

from __future__ import annotations

from aiohttp import web

from sba_api.handlers._common import json_response, parse_query, principal, services
from sba_api.schemas import AuditQuery


async def list_audit(request: web.Request) -> web.Response:
    query = parse_query(request, AuditQuery)
    return json_response(await services(request).audit.list(principal(request), query))
