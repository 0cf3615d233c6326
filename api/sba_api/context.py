"""Per-request context shared by logging and services (the request id)."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("sba_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()
