"""Prometheus metrics, in a registry per application (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "orchestrator_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "orchestrator_request_duration_seconds",
            "Time to answer an HTTP request (SSE streams: until the stream ends).",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.sse_streams = Gauge(
            "orchestrator_sse_streams_open",
            "Run-event SSE streams currently open.",
            registry=self.registry,
        )

        self.rate_limit_violations = Counter(
            "rate_limit_violations",
            "Requests refused with 429, by tenant and by the limit that refused them "
            "(tenant, principal, sse_streams).",
            ["tenant", "scope"],
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "llm_tokens",
            "Model tokens (prompt + completion) spent by llm.generate steps, by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "auth_failures",
            "Requests refused with 401 (invalid or missing token) or 403 (permission, tenant).",
            ["status"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.duration.labels(method=method, route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
