"""The API's own error types. Foreign exceptions are translated into these at the
boundary where they occur; the error middleware maps them to HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import ValidationError
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class ErrorItem:
    """One problem with a request: where (`loc`, a dotted camelCase path) and what."""

    loc: str
    msg: str


class ApiError(Exception):
    """An error with a stable code that clients may branch on."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[ErrorItem] = (),
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})
        """Response headers the error needs (WWW-Authenticate, Retry-After)."""
        if code is not None:
            self.error_code = code
        else:
            self.error_code = type(self).code


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_error"


class InvalidJson(BadRequest):
    code = "invalid_json"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable"


class UpstreamError(ApiError):
    """A dependency (Kubernetes, an embeddings provider) answered with an error."""

    status = 502
    code = "upstream_error"


class ServiceUnavailable(ApiError):
    """A dependency (Postgres, Redis, Kubernetes) cannot be reached right now."""

    status = 503
    code = "service_unavailable"


def _loc(parts: Sequence[int | str], error_type: str, prefix: Sequence[str]) -> str:
    out: list[str] = list(prefix)
    for index, part in enumerate(parts):
        if isinstance(part, int):
            out.append(str(part))
        elif error_type == "extra_forbidden" and index == len(parts) - 1:
            out.append(part)  # the unknown key exactly as the client sent it
        else:
            out.append(to_camel(part))
    return ".".join(out)


def validation_items(exc: ValidationError, prefix: Sequence[str] = ()) -> list[ErrorItem]:
    """One ErrorItem per field pydantic refused."""
    items: list[ErrorItem] = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        items.append(ErrorItem(loc=_loc(err["loc"], err["type"], prefix), msg=msg))
    return items


def from_validation_error(
    exc: ValidationError, *, what: str = "request body", prefix: Sequence[str] = ()
) -> ValidationFailed:
    items = validation_items(exc, prefix)
    fields = ", ".join(sorted({item.loc or "(body)" for item in items}))
    return ValidationFailed(f"invalid {what}: {fields}", details=items)
