"""Request parsing and response shaping shared by the handlers."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from sba_api.errors import (
    ErrorItem,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    from_validation_error,
)
from sba_api.keys import SERVICES, SETTINGS, Services
from sba_api.settings import Settings

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


async def read_json(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body: 415 for other media types, 400 for bad JSON or fields."""
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type or 'none'}"
        )
    raw = await read_body(request, settings(request).http.max_body_bytes)
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidJson(
            f"the body is not valid JSON: {exc}", details=[ErrorItem(loc="", msg=str(exc))]
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def json_response(
    model: BaseModel,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        model.model_dump(mode="json", by_alias=True), status=status, headers=headers
    )
