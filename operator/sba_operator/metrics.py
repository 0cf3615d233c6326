"""The operator's Prometheus metrics, in a registry of its own, served on SBA_OPERATOR_METRICS_PORT.

Kopf serves no metrics, so `serve()` starts prometheus_client's small HTTP server
thread (`GET /metrics`) from the startup handler; port 0 disables it. A port
that cannot be bound is logged, not fatal: metrics must not stop runs.

Counters are incremented where the operator acts (once per recorded event, so a
repeated reconcile counts nothing twice); `runs_by_phase` and `run_queue_depth`
are computed at scrape time from `RunPhases`, the phase of every run this
replica has reconciled (Kopf lists all runs at startup, so it is complete).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

RUN_SECONDS_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class _RunState:
    tenant: str
    phase: str
    queued: bool


class RunPhases(Collector):
    """The last known phase of every run, by uid: `runs_by_phase` and `run_queue_depth`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _RunState] = {}

    def set(self, uid: str, tenant: str, phase: str, queued: bool = False) -> None:
        with self._lock:
            self._runs[uid] = _RunState(tenant or "unknown", phase, queued)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._runs.pop(uid, None)

    def snapshot(self) -> tuple[Tally[tuple[str, str]], Tally[str]]:
        with self._lock:
            states = list(self._runs.values())
        phases = Tally((s.tenant, s.phase) for s in states)
        queued = Tally(s.tenant for s in states if s.queued)
        return phases, queued

    def collect(self) -> Iterable[Any]:
        phases, queued = self.snapshot()
        by_phase = GaugeMetricFamily(
            "runs_by_phase",
            "AgentRuns this operator replica knows, by tenant and phase.",
            labels=["tenant", "phase"],
        )
        for (tenant, phase), count in sorted(phases.items()):
            by_phase.add_metric([tenant, phase], count)
        depth = GaugeMetricFamily(
            "run_queue_depth",
            "Runs waiting for a slot (pending, reason Queued), by tenant.",
            labels=["tenant"],
        )
        for tenant, count in sorted(queued.items()):
            depth.add_metric([tenant], count)
        yield by_phase
        yield depth

    def describe(self) -> Iterator[Any]:
        return iter(())


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rate_limit_violations = Counter(
            "rate_limit_violations",
            "Tool-step starts refused by a tenant's quota (scope tool_calls), by tenant.",
            ["tenant", "scope"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "agent_run_duration_seconds",
            "Runs from start to a terminal phase, by tenant and outcome.",
            ["tenant", "phase"],
            buckets=RUN_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "tool_calls",
            "Tool-step attempts that finished, by tenant, tool and outcome (succeeded, failed).",
            ["tenant", "tool", "outcome"],
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "llm_tokens",
            "LLM tokens (prompt + completion) spent planning runs, by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.llm_plans = Counter(
            "llm_plans",
            "Plans asked of the LLM planner, by tenant and the planner that made the plan"
            " (llm, or builtin after a fallback).",
            ["tenant", "planner"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "operator_reconcile_duration_seconds",
            "Time to reconcile one AgentRun, by outcome (ok, error).",
            ["outcome"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.scheduled_wakeups = Gauge(
            "operator_scheduled_wakeups",
            "Runs with a pending timed wake-up (backoff, deadline, approval expiry, rate limit).",
            registry=self.registry,
        )
        self.runs = RunPhases()
        self.registry.register(self.runs)
        self._server: Any = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> bool:  # scraped from outside the pod
        """Serve /metrics on `port` (0: do not); False when the port cannot be bound."""
        if port <= 0:
            return False
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s", host, port, exc)
            return False
        log.info("metrics on http://%s:%d/metrics", host, port)
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
