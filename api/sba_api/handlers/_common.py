"""Request parsing and response shaping shared by the handlers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from sba_api.errors import (
    ErrorItem,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    from_validation_error,
)
from sba_api.keys import PRINCIPAL, RAW_BODY, SERVICES, SETTINGS, Services
from sba_api.settings import Settings
from sba_core.auth.permissions import Principal

M = TypeVar("M", bound=BaseModel)

_READ_CHUNK = 64 * 1024


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` bytes without buffering it all."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(
    request: web.Request, model: type[M], *, defaults: Mapping[str, Any] | None = None
) -> M:
    """Parse and validate a JSON body: 415 for other media types, 400 for bad JSON or fields.

    `defaults` fill fields a JSON object leaves out or sets to null (the caller's tenant).
    """
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type or 'none'}"
        )
    raw = request.get(RAW_BODY)
    if raw is None:
        raw = await read_body(request, settings(request).http.max_body_bytes)
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidJson(
            f"the body is not valid JSON: {exc}", details=[ErrorItem(loc="", msg=str(exc))]
        ) from exc
    if _has_nul(data):
        raise ValidationFailed(
            "strings may not contain NUL characters",
            details=[ErrorItem(loc="", msg="NUL character (\\u0000) in a string")],
        )
    if defaults and isinstance(data, dict):
        for key, value in defaults.items():
            if data.get(key) is None:
                data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def _has_nul(data: Any) -> bool:
    """Postgres text and jsonb cannot hold U+0000: refuse it as bad input, not a 500."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            for key, value in item.items():
                if "\x00" in key:
                    return True
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_response(
    model: BaseModel,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        model.model_dump(mode="json", by_alias=True), status=status, headers=headers
    )


def principal(request: web.Request) -> Principal:
    """The caller, as the auth middleware established it."""
    return request[PRINCIPAL]


def parse_query(request: web.Request, model: type[M]) -> M:
    if any("\x00" in key or "\x00" in value for key, value in request.query.items()):
        raise ValidationFailed(
            "invalid query string: NUL character",
            details=[ErrorItem(loc="", msg="NUL character in the query string")],
        )
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise from_validation_error(exc, what="query string") from exc
