"""One JSON object per log line: ts, level, logger, message and the context's ids."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from sba_telemetry.context import current_log_fields

_CONTEXT_KEYS = ("request_id", "tenant_id", "run_id", "trace_id", "span_id")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class ContextFilter(logging.Filter):
    """Stamp the current context's ids on a record when it is emitted.

    Formatting may happen later (or elsewhere, e.g. pytest's caplog), when the
    contextvars no longer hold the request's values: the record keeps them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_log_fields().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        live = current_log_fields()
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None) or live.get(key)
            if value:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(
    level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record (ours, Kopf's, aiohttp's) as one JSON line to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler
