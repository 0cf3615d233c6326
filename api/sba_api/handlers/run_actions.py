"""/api/v1/runs/{id}/approvals, /cancel and /continue: what people do to a running run."""

from __future__ import annotations

from aiohttp import web

from sba_api.errors import ServiceUnavailable
from sba_api.handlers._common import json_response, principal, read_json, services
from sba_api.openapi import IDEMPOTENCY_HEADER
from sba_api.schemas import ApprovalIn, CancelIn, ContinueIn
from sba_api.services.run_actions import RunActionService


def _actions(request: web.Request) -> RunActionService:
    actions = services(request).run_actions
    if actions is None:
        raise ServiceUnavailable("run actions are not available in this API process")
    return actions


async def submit_approval(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request, ApprovalIn)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    seed = f"{who.tenant}\n{key}" if key is not None else None
    answered = await _actions(request).approve(who, request.match_info["run_id"], body, seed=seed)
    view = answered.view
    if answered.decided:
        return json_response(view, status=201, headers={"Location": view.links.self_})
    # The operator has not ruled yet: the answer is recorded; poll the link for the outcome.
    return json_response(view, status=202, headers={"Location": view.links.self_})


async def get_approval(request: web.Request) -> web.Response:
    view = await _actions(request).get_approval(
        principal(request), request.match_info["run_id"], request.match_info["name"]
    )
    return json_response(view)


async def cancel_run(request: web.Request) -> web.Response:
    body = await read_json(request, CancelIn)
    view = await _actions(request).cancel(principal(request), request.match_info["run_id"], body)
    return json_response(view, status=202)


async def continue_run(request: web.Request) -> web.Response:
    body = await read_json(request, ContinueIn)
    view = await _actions(request).continue_run(
        principal(request), request.match_info["run_id"], body
    )
    return json_response(view, status=202)
