"""/api/v1/tools/{name}/execute: one tool call, run as a one-step AgentRun."""

from __future__ import annotations

from aiohttp import web

from sba_api.errors import ServiceUnavailable
from sba_api.handlers._common import json_response, principal, read_json, services
from sba_api.schemas import ToolExecuteIn
from sba_api.services.access import scope_tenant


async def execute_tool(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request, ToolExecuteIn, defaults={"tenant": who.tenant})
    scope_tenant(who, body.tenant)
    service = services(request).tool_execution
    if service is None:
        raise ServiceUnavailable("tool execution is not available in this API process")
    execution = await service.execute(who, request.match_info["name"], body)
    return json_response(execution, status=202, headers={"Location": execution.links.self_})
