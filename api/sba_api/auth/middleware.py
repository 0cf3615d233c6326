"""The auth middleware: authenticate, limit and authorise every bearer route.

Runs inside the error middleware, so every refusal has the one error shape.
Routes come from the route table: public ones and the step-token gateway pass
through untouched; every other route names the Permission it needs.
"""

from __future__ import annotations

import logging
from typing import Final
from uuid import UUID

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from sba_api.auth.stream import InvalidStreamToken, verify_stream_token
from sba_api.auth.tokens import InvalidToken, KeysUnavailable, TokenVerifier, bearer_token
from sba_api.context import note_request
from sba_api.errors import Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized
from sba_api.keys import LIMITS, METRICS, PRINCIPAL
from sba_api.openapi import RouteSpec
from sba_api.settings import AuthSettings
from sba_core.auth.permissions import Permission, Principal

log = logging.getLogger(__name__)

REALM: Final = 'Bearer realm="sba-agentic"'
STREAM_TOKEN_PARAM: Final = "access_token"


class TokenRequired(Unauthorized):
    code = "unauthorized"


class InvalidBearerToken(Unauthorized):
    code = "invalid_token"


class PermissionDenied(Forbidden):
    code = "forbidden"


def _token_required() -> TokenRequired:
    return TokenRequired(
        "a bearer token is required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": REALM},
    )


def _invalid_token() -> InvalidBearerToken:
    # One message for every reason: the client learns nothing about its token.
    return InvalidBearerToken(
        "the bearer token is invalid or expired",
        headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
    )


class Authenticator:
    """Turns a request's credentials into a Principal."""

    def __init__(self, settings: AuthSettings) -> None:
        self._verifier = TokenVerifier(settings)
        self._stream_secret = settings.stream_token_secret

    @property
    def stream_secret(self) -> str:
        return self._stream_secret

    async def close(self) -> None:
        await self._verifier.close()

    async def principal(self, request: web.Request, route: RouteSpec) -> Principal:
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None:
            try:
                return await self._verifier.verify(token)
            except InvalidToken as exc:
                log.info("bearer token refused: %s", exc)
                raise _invalid_token() from None
            except KeysUnavailable as exc:
                raise ServiceUnavailable("the token signing keys cannot be loaded") from exc
        stream_token = request.query.get(STREAM_TOKEN_PARAM)
        if route.stream_token and stream_token and self._stream_secret:
            try:
                run_id = str(UUID(request.match_info.get("run_id", "")))
                return verify_stream_token(self._stream_secret, stream_token, run_id).principal
            except (ValueError, InvalidStreamToken) as exc:
                log.info("stream token refused: %s", exc)
                raise _invalid_token() from None
        if "Authorization" in request.headers or stream_token:
            raise _invalid_token()
        raise _token_required()


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
ROUTE_SPECS = web.AppKey("route_specs", dict[str, RouteSpec])


def route_spec(request: web.Request) -> RouteSpec | None:
    match = request.match_info
    if not isinstance(match, UrlMappingMatchInfo) or match.http_exception is not None:
        return None  # 404/405: the router's own answer
    name = match.route.name
    return request.app[ROUTE_SPECS].get(name) if name is not None else None


def _require(principal: Principal, permission: Permission | None) -> None:
    if permission is None:  # add_routes refuses this; never allow by omission
        raise PermissionDenied("this operation is not available to tokens")
    if not principal.can(permission):
        raise PermissionDenied(f"this operation needs the {permission.value} permission")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_spec(request)
    if route is None or not route.bearer:
        return await handler(request)
    metrics = request.app[METRICS]
    try:
        principal = await request.app[AUTHENTICATOR].principal(request, route)
        limits = request.app.get(LIMITS)
        if limits is not None:
            decision = await limits.admit(principal.tenant, principal.user)
            if not decision.admitted:
                raise TooManyRequests(
                    f"too many requests ({decision.scope} limit); "
                    f"retry in {decision.retry_after_seconds} s",
                    headers={"Retry-After": str(decision.retry_after_seconds)},
                )
        _require(principal, route.permission)
    except (Unauthorized, Forbidden) as exc:
        metrics.auth_failures.labels(status=str(exc.status)).inc()
        raise
    request[PRINCIPAL] = principal
    note_request(tenant_id=principal.tenant)
    return await handler(request)
