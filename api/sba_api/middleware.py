"""The one middleware every request passes: request id, trace span, error mapping, metrics.

Each request is a server span named after its route template, continuing the
caller's W3C `traceparent` when there is one (tool pods send theirs to the gateway).

Every exception ends here. Our `ApiError`s carry their status and code;
aiohttp's own HTTP exceptions (unknown route, wrong method, body too large)
are reshaped into the same error body; anything else is a logged 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import SpanKind, Status, StatusCode

from sba_api.context import note_request, request_id_var, run_id_var, tenant_id_var
from sba_api.errors import ApiError, ErrorItem
from sba_api.keys import METRICS, REQUEST_ID, TELEMETRY
from sba_api.schemas import ErrorBody, ErrorDetail, ErrorInfo
from sba_telemetry import TRACEPARENT_HEADER, context_from_traceparent

log = logging.getLogger("sba_api.access")

REQUEST_ID_HEADER: Final = "X-Request-ID"
_SANE_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")

_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
}


def request_id_for(request: web.Request) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    return given if _SANE_REQUEST_ID.match(given) else uuid.uuid4().hex


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    details: list[ErrorItem] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(
        error=ErrorInfo(
            code=code,
            message=message,
            details=[ErrorDetail(loc=d.loc, msg=d.msg) for d in details or []],
            request_id=request_id,
        )
    )
    response = web.json_response(body.model_dump(mode="json"), status=status, headers=headers)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _from_http_exception(exc: web.HTTPException, request_id: str) -> web.Response:
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        message = f"method {exc.method} is not allowed here"
    elif exc.status == 404:
        message = "no such route"
    elif exc.status == 413:
        message = "the request body is too large"
    else:
        text = exc.text or ""
        message = text if text and not text.startswith(f"{exc.status}:") else exc.reason
    code = _HTTP_CODES.get(exc.status, "internal_error" if exc.status >= 500 else "http_error")
    return error_response(exc.status, code, message, request_id, headers=headers)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_for(request)
    request[REQUEST_ID] = request_id
    route = _route_label(request)
    tokens = (
        request_id_var.set(request_id),
        tenant_id_var.set(None),
        run_id_var.set(None),
    )
    try:
        with request.app[TELEMETRY].span(
            f"{request.method} {route}",
            parent=context_from_traceparent(request.headers.get(TRACEPARENT_HEADER)),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "request_id": request_id,
            },
        ) as span:
            run_id = request.match_info.get("run_id")
            if run_id:
                note_request(run_id=run_id)
            response = await _answer(request, handler, request_id, route)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
    finally:
        run_id_var.reset(tokens[2])
        tenant_id_var.reset(tokens[1])
        request_id_var.reset(tokens[0])


async def _answer(
    request: web.Request, handler: Handler, request_id: str, route: str
) -> web.StreamResponse:
    started = time.perf_counter()
    response: web.StreamResponse | None = None
    try:
        try:
            response = await handler(request)
        except ApiError as exc:
            if exc.status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path, exc.message)
            response = error_response(
                exc.status, exc.error_code, exc.message, request_id, exc.details, exc.headers
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                exc.headers[REQUEST_ID_HEADER] = request_id
                raise
            response = _from_http_exception(exc, request_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "unhandled error in %s %s",
                request.method,
                request.path,
                extra={"request_id": request_id},
            )
            response = error_response(500, "internal_error", "internal server error", request_id)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        status = response.status if response is not None else 499
        elapsed = time.perf_counter() - started
        request.app[METRICS].observe(request.method, route, status, elapsed)
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            status,
            extra={
                "request_id": request_id,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: streamed responses get the header too."""
    request_id = request.get(REQUEST_ID)
    if request_id and REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = request_id
