"""JSON log lines, each carrying the request, tenant, run and trace of what is being served."""

from __future__ import annotations

import logging

from sba_telemetry.logging import ContextFilter, JsonFormatter, configure_json_logging

__all__ = ["ContextFilter", "JsonFormatter", "configure_logging"]


def configure_logging(level: int | str = logging.INFO) -> None:
    """Send every log record to stderr as one JSON object per line."""
    configure_json_logging(level)
