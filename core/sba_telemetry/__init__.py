"""Traces and log correlation shared by the API and the operator.

Nothing here is global at import time: each process builds one `Telemetry` from
its `TelemetrySettings` at startup and passes it to what it creates. The tool
runtime (`sba_tools`) does not use this package: it only passes `TRACEPARENT` on.
"""

from sba_telemetry.context import (
    bind_log_context,
    current_log_fields,
    request_id_var,
    run_id_var,
    tenant_id_var,
)
from sba_telemetry.logging import ContextFilter, JsonFormatter, configure_json_logging
from sba_telemetry.tracing import (
    TRACEPARENT_ANNOTATION,
    TRACEPARENT_ENV,
    TRACEPARENT_HEADER,
    Telemetry,
    TelemetrySettings,
    context_from_traceparent,
    current_traceparent,
)

__all__ = [
    "TRACEPARENT_ANNOTATION",
    "TRACEPARENT_ENV",
    "TRACEPARENT_HEADER",
    "ContextFilter",
    "JsonFormatter",
    "Telemetry",
    "TelemetrySettings",
    "bind_log_context",
    "configure_json_logging",
    "context_from_traceparent",
    "current_log_fields",
    "current_traceparent",
    "request_id_var",
    "run_id_var",
    "tenant_id_var",
]
