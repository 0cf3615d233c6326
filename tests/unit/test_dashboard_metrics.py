"""The Grafana dashboard queries only metrics our code registers; the brief's metrics exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from sba_api.metrics import Metrics
from sba_operator.metrics import OperatorMetrics

DASHBOARD = Path(__file__).parents[2] / "charts" / "sba-agentic" / "dashboards" / "sba-agentic.json"
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# PromQL words that are not metric names.
_PROMQL = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "clamp_min",
    "avg", "max", "min", "count", "le", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "topk", "bottomk", "e",
}  # fmt: skip


def _series_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def _registered() -> set[str]:
    return _series_names(Metrics().registry) | _series_names(OperatorMetrics().registry)


def _metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series (not functions, labels, vars)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors ($__rate_interval)
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r'"[^"]*"', "", expr)
    found = set()
    for match in _IDENT.finditer(expr):
        word = match.group(0)
        start = match.start()
        if word in _PROMQL or (start > 0 and expr[start - 1] in "$."):
            continue
        if re.match(r"\s*\(", expr[match.end() :]):  # a function call
            continue
        found.add(word)
    return found


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return list(dashboard["panels"])


def test_the_brief_metrics_are_registered() -> None:
    registered = _registered()
    for name in (
        "orchestrator_requests_total",
        "agent_run_duration_seconds_bucket",
        "tool_calls_total",
        "llm_tokens_total",
        "run_queue_depth",
        "rate_limit_violations_total",
        "orchestrator_sse_streams_open",
        "runs_by_phase",
        "operator_reconcile_duration_seconds_bucket",
    ):
        assert name in registered, name
    api = {f.name: f for f in Metrics().registry.collect()}
    operator = OperatorMetrics()
    operator.tool_calls.labels(tenant="acme", tool="knowledge.search", outcome="succeeded").inc()
    operator.llm_tokens.labels(tenant="acme").inc(10)
    samples = {
        (s.name, tuple(sorted(s.labels))) for f in operator.registry.collect() for s in f.samples
    }
    assert ("tool_calls_total", ("outcome", "tenant", "tool")) in samples
    assert ("llm_tokens_total", ("tenant",)) in samples
    assert "orchestrator_requests" in api


def test_every_panel_queries_registered_metrics() -> None:
    registered = _registered()
    panels = _panels()
    assert len(panels) >= 10
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("latency", "error", "sse", "phase", "duration", "tool", "token", "queue"):
        assert topic in titles, topic
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            names = _metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            unknown = names - registered
            assert not unknown, (panel["title"], unknown)


def test_the_dashboard_has_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_the_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{status=~"5.."}'
        "[$__rate_interval]))) / clamp_min(sum(rate(y_total[5m])), 1e-9)"
    )
    assert _metric_names(expr) == {"x_bucket", "y_total"}
