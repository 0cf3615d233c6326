"""What the current request or reconcile is about, for log lines (contextvars).

The API middleware binds `request_id` (and `tenant_id`/`run_id` once known); the
operator's reconcile driver binds `run_id` and `tenant_id`. The trace and span
ids come from OpenTelemetry's own (contextvar-based) current span.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from opentelemetry import trace

request_id_var: ContextVar[str | None] = ContextVar("sba_request_id", default=None)
tenant_id_var: ContextVar[str | None] = ContextVar("sba_tenant_id", default=None)
run_id_var: ContextVar[str | None] = ContextVar("sba_run_id", default=None)

_VARS: dict[str, ContextVar[str | None]] = {
    "request_id": request_id_var,
    "tenant_id": tenant_id_var,
    "run_id": run_id_var,
}


@contextmanager
def bind_log_context(
    *, request_id: str | None = None, tenant_id: str | None = None, run_id: str | None = None
) -> Iterator[None]:
    """Set the given (non-empty) fields for the duration of the block."""
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
    for key, value in (("request_id", request_id), ("tenant_id", tenant_id), ("run_id", run_id)):
        if value:
            var = _VARS[key]
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_log_fields() -> dict[str, str]:
    """The known fields of the current context: ids bound above plus trace_id/span_id."""
    fields = {key: value for key, var in _VARS.items() if (value := var.get())}
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        fields["trace_id"] = format(span.trace_id, "032x")
        fields["span_id"] = format(span.span_id, "016x")
    return fields
