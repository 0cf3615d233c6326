"""The tool container's settings, read once from its environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sba_tools.errors import ConfigurationError

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class RuntimeSettings:
    gateway_url: str
    """Base URL of the API serving the internal tool gateway, without a trailing slash."""
    step_token: str = field(repr=False)
    """The bearer credential for this step attempt. Never logged, never repr'd."""
    run_id: str | None = None
    step_id: str | None = None
    termination_log: str = DEFAULT_TERMINATION_LOG
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    traceparent: str | None = None
    """W3C trace context of the operator span that created the Job (`TRACEPARENT`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if env is None else env
        gateway_url = env.get("SBA_GATEWAY_URL", "").strip().rstrip("/")
        token = env.get("SBA_STEP_TOKEN", "").strip()
        missing = [
            name
            for name, value in (("SBA_GATEWAY_URL", gateway_url), ("SBA_STEP_TOKEN", token))
            if not value
        ]
        if missing:
            raise ConfigurationError(f"missing environment: {', '.join(missing)}")
        parts = urlsplit(gateway_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError("SBA_GATEWAY_URL must be an absolute http(s) URL")
        raw_timeout = env.get("SBA_GATEWAY_TIMEOUT_SECONDS", "").strip()
        try:
            timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_SECONDS
        except ValueError:
            raise ConfigurationError("SBA_GATEWAY_TIMEOUT_SECONDS must be a number") from None
        if timeout <= 0:
            raise ConfigurationError("SBA_GATEWAY_TIMEOUT_SECONDS must be positive")
        return cls(
            gateway_url=gateway_url,
            step_token=token,
            run_id=env.get("SBA_RUN_ID") or None,
            step_id=env.get("SBA_STEP_ID") or None,
            termination_log=env.get("SBA_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG,
            timeout_seconds=timeout,
            traceparent=parse_traceparent(env.get("TRACEPARENT", "")),
        )

    @staticmethod
    def termination_log_from_env(env: Mapping[str, str] | None = None) -> str:
        """Where to write the termination message even when the rest of the env is broken."""
        env = os.environ if env is None else env
        return env.get("SBA_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG


_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def parse_traceparent(value: str) -> str | None:
    """A well-formed W3C traceparent (version 00, non-zero ids), else None."""
    value = value.strip().lower()
    match = _TRACEPARENT.match(value)
    if match is None or set(match[1]) == {"0"} or set(match[2]) == {"0"}:
        return None
    return value


def trace_ids(traceparent: str | None) -> dict[str, str]:
    """The trace_id/span_id log fields a traceparent names (empty when there is none)."""
    if not traceparent:
        return {}
    _, trace_id, span_id, _ = traceparent.split("-")
    return {"trace_id": trace_id, "span_id": span_id}
