"""Per-request context shared by logging and services (the request id).

The variables live in `sba_telemetry.context`, where the JSON log formatter reads
them together with the tenant, the run and the current trace.
"""

from __future__ import annotations

from opentelemetry import trace

from sba_telemetry.context import request_id_var, run_id_var, tenant_id_var

__all__ = [
    "current_request_id",
    "note_request",
    "request_id_var",
    "run_id_var",
    "tenant_id_var",
]


def current_request_id() -> str | None:
    return request_id_var.get()


def note_request(*, tenant_id: str | None = None, run_id: str | None = None) -> None:
    """What the request turned out to be about: its log lines and its span say so.

    The request middleware resets these when the request ends.
    """
    span = trace.get_current_span()
    if tenant_id:
        tenant_id_var.set(tenant_id)
        span.set_attribute("tenant_id", tenant_id)
    if run_id:
        run_id_var.set(run_id)
        span.set_attribute("run_id", run_id)
