"""`Idempotency-Key` for a route: `idempotent(handler)`, applied by the route table.

The route table marks routes `idempotent=True`; `add_routes` wraps their
handlers with this, so every such route behaves the same way (see
sba_api.services.idempotency for the semantics).
"""

from __future__ import annotations

import json
import re
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from sba_api.errors import ApiError, BadRequest, ErrorItem
from sba_api.handlers._common import principal, read_body, services, settings
from sba_api.keys import RAW_BODY, REQUEST_ID
from sba_api.openapi import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN
from sba_api.schemas import ErrorBody, ErrorDetail, ErrorInfo
from sba_api.services.idempotency import StoredResponse, fingerprint, should_store

REPLAYED_HEADER: Final = "Idempotent-Replayed"
_KEY: Final = re.compile(IDEMPOTENCY_KEY_PATTERN)
_KEPT_HEADERS: Final = ("Location",)


class InvalidIdempotencyKey(BadRequest):
    code = "invalid_idempotency_key"


def _error_body(exc: ApiError, request_id: str | None) -> dict[str, object]:
    body = ErrorBody(
        error=ErrorInfo(
            code=exc.error_code,
            message=exc.message,
            details=[ErrorDetail(loc=d.loc, msg=d.msg) for d in exc.details],
            request_id=request_id or "",
        )
    )
    return body.model_dump(mode="json")


def _replay(stored: StoredResponse) -> web.Response:
    headers = {**stored.headers, REPLAYED_HEADER: "true"}
    return web.json_response(stored.body, status=stored.status, headers=headers)


def idempotent(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        service = services(request).idempotency
        if key is None or service is None:
            return await handler(request)
        if not _KEY.match(key):
            raise InvalidIdempotencyKey(
                "Idempotency-Key must be 1 to 200 printable ASCII characters",
                details=[ErrorItem(loc=IDEMPOTENCY_HEADER, msg="invalid key")],
            )
        who = principal(request)
        raw = await read_body(request, settings(request).http.max_body_bytes)
        request[RAW_BODY] = raw
        request_hash = fingerprint(request.method, request.path, who.user, raw)
        ident = {"tenant": who.tenant, "key": key, "request_hash": request_hash}
        stored = await service.begin(method=request.method, path=request.path, **ident)
        if stored is not None:
            return _replay(stored)
        try:
            response = await handler(request)
        except ApiError as exc:
            if should_store(exc.status):
                answer = StoredResponse(exc.status, _error_body(exc, request.get(REQUEST_ID)))
                await service.finish(response=answer, **ident)
            else:
                await service.abandon(**ident)
            raise
        except BaseException:
            await service.abandon(**ident)
            raise
        if not isinstance(response, web.Response) or not should_store(response.status):
            await service.abandon(**ident)
            return response
        body = response.body
        try:
            content = json.loads(body) if isinstance(body, bytes | bytearray) and body else None
        except ValueError:
            await service.abandon(**ident)
            return response
        headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
        await service.finish(response=StoredResponse(response.status, content, headers), **ident)
        return response

    return wrapped
