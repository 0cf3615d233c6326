"""The process's tracer provider, its exporters, and W3C trace-context propagation.

| variable | what |
|---|---|
| OTEL_SERVICE_NAME | service.name of this process's spans (default: the process's) |
| OTEL_EXPORTER_OTLP_ENDPOINT | export over OTLP when an OTLP exporter package is installed |
| OTEL_TRACES_EXPORTER | `console` prints spans to stdout; `none` exports nothing |
| OTEL_SDK_DISABLED | `true`: no exporter (spans still carry ids for log correlation) |
| SBA_OTEL_FILE_EXPORT | tests/dev only: every finished span as a JSON line to this path |

An OTLP endpoint without an exporter package is a warning, never an error: no
collector is required.

Trace context travels as a W3C `traceparent`: in the AgentRun annotation
`sba-agentic.io/traceparent` (API -> operator), in the tool Job's `TRACEPARENT` env
(operator -> tool pod) and in the `traceparent` HTTP header (tool pod -> gateway).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT_ANNOTATION: Final = "sba-agentic.io/traceparent"
TRACEPARENT_ENV: Final = "TRACEPARENT"
TRACEPARENT_HEADER: Final = "traceparent"

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_OTLP_MODULES: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TelemetrySettings:
    service_name: str
    otlp_endpoint: str | None = None
    exporter: str = "otlp"
    """OTEL_TRACES_EXPORTER: `otlp` (when an endpoint is set), `console` or `none`."""
    disabled: bool = False
    file_export: str | None = None

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = os.environ if env is None else env

        def text(name: str) -> str:
            return env.get(name, "").strip()

        return cls(
            service_name=text("OTEL_SERVICE_NAME") or service_name,
            otlp_endpoint=text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or text("OTEL_EXPORTER_OTLP_ENDPOINT")
            or None,
            exporter=(text("OTEL_TRACES_EXPORTER") or "otlp").lower(),
            disabled=_truthy(text("OTEL_SDK_DISABLED")),
            file_export=text("SBA_OTEL_FILE_EXPORT") or None,
        )


class JsonLinesSpanExporter(SpanExporter):
    """Tests/dev: append each span as one JSON line (several processes may share the file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, lines.encode("utf-8"))
                finally:
                    os.close(fd)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """The fields of a finished span that tests and humans look at."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def _otlp_exporter(endpoint: str) -> SpanExporter | None:
    for module_name in _OTLP_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        exporter: SpanExporter = module.OTLPSpanExporter()  # reads the OTEL_* variables itself
        return exporter
    log.warning(
        "OTEL_EXPORTER_OTLP_ENDPOINT=%s but no OTLP exporter package is installed"
        " (opentelemetry-exporter-otlp): traces are not exported",
        endpoint,
    )
    return None


class Telemetry:
    """One per process: the tracer provider with its exporters, and propagation helpers."""

    def __init__(
        self, settings: TelemetrySettings, *, exporters: Sequence[SpanExporter] = ()
    ) -> None:
        self.settings = settings
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name})
        )
        for exporter in exporters:  # tests: in-memory, synchronous
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        if settings.file_export:
            self.provider.add_span_processor(
                SimpleSpanProcessor(JsonLinesSpanExporter(settings.file_export))
            )
        if not settings.disabled:
            if settings.exporter == "console":
                self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            elif settings.exporter == "otlp" and settings.otlp_endpoint:
                otlp = _otlp_exporter(settings.otlp_endpoint)
                if otlp is not None:
                    self.provider.add_span_processor(BatchSpanProcessor(otlp))
        self.tracer = self.provider.get_tracer("sba-agentic")

    @classmethod
    def for_tests(cls, service_name: str, *exporters: SpanExporter) -> Telemetry:
        return cls(TelemetrySettings(service_name, exporter="none"), exporters=exporters)

    def install(self) -> None:
        """Make this the process's global provider (from a process's startup, once)."""
        trace.set_tracer_provider(self.provider)

    @contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, str | int | float | bool] | None = None,
    ) -> Iterator[Span]:
        """A span, current for the block; a child of `parent` when given, else of the current."""
        with self.tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=dict(attributes or {})
        ) as span:
            yield span

    def shutdown(self) -> None:
        self.provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None outside any span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The remote parent a traceparent names; None when absent or malformed."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent.strip()})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx
