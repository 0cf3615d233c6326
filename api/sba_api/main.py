"""`sba-agentic api` / `python -m sba_api`: serve the API."""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from sba_api.app import create_app
from sba_api.logs import configure_logging
from sba_api.settings import Settings, SettingsError
from sba_telemetry import Telemetry

log = logging.getLogger("sba_api")


def run() -> int:
    configure_logging(os.environ.get("SBA_LOG_LEVEL", "INFO").upper())
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("starting API on %s:%s", settings.http.host, settings.http.port)
    telemetry = Telemetry(settings.telemetry)
    telemetry.install()
    try:
        web.run_app(
            create_app(settings, telemetry=telemetry),
            host=settings.http.host,
            port=settings.http.port,
            access_log=None,
            print=None,
            shutdown_timeout=5.0,
        )
    except Exception:
        log.exception("the API stopped with an error")
        return 1
    finally:
        telemetry.shutdown()
    return 0
