"""Run the operator: `sba-agentic operator` or `python -m sba_operator`."""

from __future__ import annotations

import logging
import os
import sys

import kopf

from sba_operator.handlers import build_registry
from sba_operator.settings import Settings, SettingsError
from sba_telemetry import configure_json_logging

log = logging.getLogger("sba_operator")


def _configure_logging() -> None:
    level = os.environ.get("SBA_LOG_LEVEL", "INFO").upper()
    # One JSON object per line, with run_id/tenant_id/trace_id of the reconcile logging it.
    configure_json_logging(getattr(logging, level, logging.INFO), sys.stderr)
    # Kopf logs every handler call at INFO; keep it at WARNING unless asked.
    if level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)


def run(settings: Settings | None = None) -> int:
    """Run Kopf until SIGINT/SIGTERM; the exit code."""
    _configure_logging()
    try:
        settings = settings or Settings.from_env()
    except SettingsError as exc:
        log.error("invalid settings: %s", exc)
        return 2
    peering = settings.kubernetes.peering
    kopf.run(
        registry=build_registry(admission=settings.admission.enabled),
        memo=kopf.Memo(settings=settings),
        standalone=peering is None,
        peering_name=peering,
        priority=settings.kubernetes.priority,
        liveness_endpoint=settings.kubernetes.liveness_endpoint,
        clusterwide=settings.kubernetes.clusterwide,
        namespaces=settings.kubernetes.namespaces,
    )
    return 0
