"""/internal/v1/tasks: task.create's side effect, made through the gateway."""

from __future__ import annotations

from aiohttp import web

from sba_api.errors import ServiceUnavailable
from sba_api.handlers._common import json_response, read_json, services
from sba_core.tools.contracts import TaskFields


async def create_task(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    claims = services(request).gateway.authenticate(
        token.strip() if scheme.lower() == "bearer" else None
    )
    tasks = services(request).tasks
    if tasks is None:
        raise ServiceUnavailable("the task store is not configured")
    fields = await read_json(request, TaskFields)
    created = await tasks.create(claims, fields)
    return json_response(created, status=201 if created.created else 200)
