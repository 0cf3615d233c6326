"""JSON-lines logging to stderr, with the step token redacted from every value.

The line shape matches the API's and the operator's (ts, level, logger, message, and
run_id/tenant_id/trace_id/span_id when bound), plus ``event``, the stable name.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[redacted]"
LOGGER_NAME = "sba_tools"


class JsonLogger:
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` (= ``event``),
    ``event`` and any context fields."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        secrets: Iterable[str] = (),
        **context: Any,
    ) -> None:
        self._stream = stream
        self._secrets = tuple(s for s in secrets if s)
        self._context = dict(context)

    def bind(self, **context: Any) -> JsonLogger:
        return JsonLogger(self._stream, secrets=self._secrets, **{**self._context, **context})

    def add_secret(self, secret: str) -> None:
        if secret:
            self._secrets = (*self._secrets, secret)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "logger": LOGGER_NAME,
            "message": event,
            "event": event,
            **{k: v for k, v in {**self._context, **fields}.items() if v is not None},
        }
        line = json.dumps(record, default=str, ensure_ascii=False, separators=(",", ":"))
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass
