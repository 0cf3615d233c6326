"""Traces across API -> operator -> tool Job, and JSON log lines that name them.

In process: the API and the operator get their own `Telemetry` with an in-memory
exporter; the trace crosses between them the way it does in production, through the
AgentRun's `sba-agentic.io/traceparent` annotation. Across processes: a child process
exporting to `SBA_OTEL_FILE_EXPORT` continues a trace given in `TRACEPARENT`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, cast
from unittest.mock import AsyncMock, MagicMock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sba_api.app import create_app
from sba_api.keys import Services
from sba_api.services.gateway import GatewayService
from sba_api.services.runs import RunService
from sba_api.services.system import SystemService
from sba_api.services.tool_catalog import ToolCatalogService
from sba_api.settings import AuthSettings, Settings
from sba_core.auth.dev_tokens import mint_dev_token
from sba_core.tools.catalog import ToolCatalog
from sba_core.tools.registry import builtin_registry
from sba_operator.handlers.runs import RunDriver
from sba_operator.reconcile.jobs import (
    TRACEPARENT_ENV,
    RunRef,
    build_job,
    with_traceparent,
)
from sba_operator.settings import (
    DatabaseSettings,
    KubernetesSettings,
    RedisSettings,
    ToolSettings,
)
from sba_operator.settings import Settings as OperatorSettings
from sba_telemetry import (
    TRACEPARENT_ANNOTATION,
    ContextFilter,
    JsonFormatter,
    Telemetry,
    TelemetrySettings,
    bind_log_context,
    context_from_traceparent,
    current_traceparent,
)
from sba_tools.gateway import GatewayClient
from sba_tools.jsonlog import JsonLogger
from sba_tools.settings import RuntimeSettings, parse_traceparent

JWT_SECRET = "unit-test-jwt-secret-0123456789abcdef"
STEP_SECRET = "unit-test-step-secret-0123456789"
MEMBER = {
    "Authorization": "Bearer "
    + mint_dev_token(JWT_SECRET, tenant="acme", user="ann", roles=["member"])
}
RUN_UID = "0b9f0c1e-58a4-4f43-9f5e-0d6f2b0d7f11"


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return _hex(span.context.trace_id, 32)


class _Lines(logging.Handler):
    """What the production handler writes: JSON lines, context stamped at emit time."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(ContextFilter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[_Lines]:
    handler = _Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# -- the API ---------------------------------------------------------------------------


class _FakeKube:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def create_agent_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(body))
        obj["metadata"].update(
            {
                "name": "run-abc12",
                "uid": RUN_UID,
                "resourceVersion": "1",
                "creationTimestamp": "2025-01-01T00:00:00Z",
            }
        )
        self.created.append(obj)
        return obj


def _services(kube: _FakeKube) -> Services:
    registry = ToolCatalogService(None, builtin_registry())
    nothing = cast(Any, None)
    return Services(
        runs=RunService(cast(Any, AsyncMock()), cast(Any, kube), registry),
        events=nothing,
        artifacts=nothing,
        knowledge=nothing,
        gateway=GatewayService(STEP_SECRET, nothing, registry, nothing, nothing),
        system=SystemService(nothing, nothing, registry, nothing),
        tenants=nothing,
        audit=nothing,
        stream_tokens=nothing,
    )


@pytest.fixture
def api_spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def kube() -> _FakeKube:
    return _FakeKube()


@pytest.fixture
async def client(
    api_spans: InMemorySpanExporter, kube: _FakeKube
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(
        Settings(auth=AuthSettings(hs256_secret=JWT_SECRET)),
        services=_services(kube),
        telemetry=Telemetry.for_tests("sba-api", api_spans),
    )
    async with TestClient(TestServer(app), headers=MEMBER) as test_client:
        yield test_client


async def test_each_request_is_a_server_span_named_by_its_route(
    client: TestClient[Any, Any], api_spans: InMemorySpanExporter
) -> None:
    resp = await client.get("/api/v1/runs/not-a-uuid", headers={"X-Request-ID": "req-span-1"})
    assert resp.status in (400, 404, 503)
    (span,) = [s for s in api_spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert span.name == "GET /api/v1/runs/{run_id}"
    attributes = dict(span.attributes or {})
    assert attributes["request_id"] == "req-span-1"
    assert attributes["http.route"] == "/api/v1/runs/{run_id}"
    assert attributes["http.response.status_code"] == resp.status
    assert attributes["tenant_id"] == "acme"
    assert attributes["run_id"] == "not-a-uuid"


async def test_a_callers_traceparent_is_continued(
    client: TestClient[Any, Any], api_spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    resp = await client.get("/healthz", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert resp.status == 200
    (span,) = api_spans.get_finished_spans()
    assert _trace_id(span) == trace_id
    assert span.parent is not None
    assert _hex(span.parent.span_id, 16) == parent_id


async def test_a_requests_log_lines_carry_its_request_id_and_trace_id(
    client: TestClient[Any, Any], api_spans: InMemorySpanExporter, log_lines: _Lines
) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "req-log-1"})
    assert resp.status == 200
    (span,) = api_spans.get_finished_spans()
    mine = [line for line in log_lines.lines if line.get("request_id") == "req-log-1"]
    assert mine, "the access log line names the request"
    for line in mine:
        assert {"ts", "level", "logger", "message"} <= set(line)
        assert line["trace_id"] == _trace_id(span)
        assert len(line["span_id"]) == 16


async def test_one_runs_spans_share_one_trace_from_api_to_operator(
    client: TestClient[Any, Any],
    api_spans: InMemorySpanExporter,
    kube: _FakeKube,
    log_lines: _Lines,
) -> None:
    resp = await client.post("/api/v1/runs", json={"prompt": "What is our refund policy?"})
    assert resp.status == 201, await resp.text()
    (created,) = kube.created
    traceparent = created["metadata"]["annotations"][TRACEPARENT_ANNOTATION]
    (server,) = [s for s in api_spans.get_finished_spans() if s.name == "POST /api/v1/runs"]
    assert traceparent.split("-")[1] == _trace_id(server)
    assert dict(server.attributes or {})["run_id"] == RUN_UID

    # The operator reconciles the AgentRun the API created.
    operator_spans = InMemorySpanExporter()
    driver = _driver(created, Telemetry.for_tests("sba-operator", operator_spans))
    log_lines.lines.clear()
    await driver.reconcile("tenant-acme", "run-abc12", RUN_UID)

    spans = operator_spans.get_finished_spans()
    reconciles = [s for s in spans if s.name == "reconcile AgentRun"]
    assert reconciles
    assert {_trace_id(s) for s in spans} == {_trace_id(server)}
    assert reconciles[0].parent is not None
    assert _hex(reconciles[0].parent.span_id, 16) == traceparent.split("-")[2]
    assert dict(reconciles[0].attributes or {})["tenant_id"] == "acme"

    # The reconcile's log lines say which run, which tenant and which trace.
    lines = [line for line in log_lines.lines if line["logger"].startswith("sba_operator")]
    assert lines, "the reconcile logged something"
    for line in lines:
        assert line["run_id"] == RUN_UID
        assert line["tenant_id"] == "acme"
        assert line["trace_id"] == _trace_id(server)


def _driver(obj: dict[str, Any], telemetry: Telemetry) -> RunDriver:
    kube = MagicMock()
    kube.get_agentrun = AsyncMock(return_value=obj)
    kube.get_tenant = AsyncMock(return_value=None)  # an unknown tenant: the run fails, logged
    for method in ("list_approvals", "list_agentruns", "list_run_jobs", "list_job_pods"):
        setattr(kube, method, AsyncMock(return_value=[]))
    for method in ("replace_agentrun_status", "patch_approval_status", "delete_job"):
        setattr(kube, method, AsyncMock(return_value={}))
    settings = OperatorSettings(
        kubernetes=KubernetesSettings(),
        database=DatabaseSettings(url="postgresql://unused"),
        redis=RedisSettings(),
        tools=ToolSettings(step_token_secret=STEP_SECRET),
    )
    events = MagicMock()
    events.append = AsyncMock(return_value=[])
    return RunDriver(
        settings=settings,
        kube=kube,
        runs=cast(Any, AsyncMock()),
        events=events,
        tool_calls=cast(Any, AsyncMock()),
        redis=cast(Any, AsyncMock()),
        catalog=ToolCatalog(builtin_registry()),
        post_event=lambda obj, event: logging.getLogger("sba_operator.events").info(
            "event %s", event.reason
        ),
        telemetry=telemetry,
        clock=lambda: datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC),
    )


# -- operator -> tool Job ----------------------------------------------------------------


def _tool_env(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_job_builder_passes_traceparent_to_the_tool_container() -> None:
    ref = RunRef(uid=RUN_UID, name="run-abc12", namespace="tenant-acme", tenant="acme")
    spec = builtin_registry().get("knowledge.search")
    assert spec is not None
    tools = ToolSettings(step_token_secret=STEP_SECRET)
    plain = build_job(run=ref, step_id="s1", attempt=1, spec=spec, tools=tools)
    assert TRACEPARENT_ENV not in _tool_env(plain)
    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = build_job(run=ref, step_id="s1", attempt=1, spec=spec, tools=tools, traceparent=value)
    assert _tool_env(traced)[TRACEPARENT_ENV] == value
    other = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
    again = with_traceparent(traced, other)
    assert _tool_env(again)[TRACEPARENT_ENV] == other
    assert _tool_env(traced)[TRACEPARENT_ENV] == value, "the input is not modified"
    assert [e["name"] for e in again["spec"]["template"]["spec"]["containers"][0]["env"]].count(
        TRACEPARENT_ENV
    ) == 1


# -- the tool runtime: a header pass-through, no SDK ----------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        body = json.dumps(
            {"runId": RUN_UID, "tenant": "acme", "stepId": "s1", "attempt": 1, "tool": "x"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_the_tool_runtime_sends_the_jobs_traceparent_to_the_gateway() -> None:
    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    settings = RuntimeSettings.from_env(
        {"SBA_GATEWAY_URL": "http://127.0.0.1:1", "SBA_STEP_TOKEN": "t", "TRACEPARENT": value}
    )
    assert settings.traceparent == value
    assert parse_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert parse_traceparent("garbage") is None

    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        stream = io.StringIO()
        gateway = GatewayClient(
            f"http://127.0.0.1:{server.server_port}",
            "t",
            timeout_seconds=5,
            log=JsonLogger(stream),
            traceparent=settings.traceparent,
        )
        gateway.get_step()
    finally:
        server.shutdown()
        thread.join()
    assert {k.lower(): v for k, v in _Recorder.seen[-1].items()}["traceparent"] == value
    line = json.loads(stream.getvalue().splitlines()[0])
    assert {"ts", "level", "logger", "message"} <= set(line)


# -- across processes: the file exporter ----------------------------------------------------

_CHILD = """
from sba_telemetry import Telemetry, TelemetrySettings, context_from_traceparent
import os
telemetry = Telemetry(TelemetrySettings.from_env("child"))
with telemetry.span("child work", parent=context_from_traceparent(os.environ["TRACEPARENT"])):
    pass
telemetry.shutdown()
"""


def test_processes_continue_one_trace_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    parent = Telemetry(TelemetrySettings.from_env("parent", {"SBA_OTEL_FILE_EXPORT": str(path)}))
    with parent.span("parent work"):
        traceparent = current_traceparent()
        assert traceparent is not None
        env = {
            **os.environ,
            "SBA_OTEL_FILE_EXPORT": str(path),
            "TRACEPARENT": traceparent,
            "OTEL_TRACES_EXPORTER": "none",
        }
        subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, timeout=60)
    parent.shutdown()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"parent work", "child work"}
    assert by_name["child work"]["service"] == "child"
    assert by_name["child work"]["trace_id"] == by_name["parent work"]["trace_id"]
    assert by_name["child work"]["parent_span_id"] == by_name["parent work"]["span_id"]


def test_settings_never_require_a_collector(caplog: pytest.LogCaptureFixture) -> None:
    settings = TelemetrySettings.from_env(
        "x", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "y"}
    )
    assert settings.service_name == "y"
    assert settings.otlp_endpoint == "http://collector:4318"
    telemetry = Telemetry(settings)  # without an OTLP package: a warning, not an error
    with telemetry.span("works"):
        assert current_traceparent() is not None
    telemetry.shutdown()
    assert context_from_traceparent("not-a-traceparent") is None


def test_bound_fields_reach_the_json_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("sba_test.bound")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with bind_log_context(run_id="r1", tenant_id="t1", request_id="q1"):
            logger.warning("hello %s", "world")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello world"
    assert (first["run_id"], first["tenant_id"], first["request_id"]) == ("r1", "t1", "q1")
    assert "run_id" not in second


# -- Events and Conditions on Approvals ------------------------------------------------------


async def test_an_answered_approval_gets_a_processed_condition_and_an_event() -> None:
    posted: list[tuple[dict[str, Any], Any]] = []
    driver = _driver({}, Telemetry.for_tests("sba-operator"))
    driver.post_event = lambda obj, event: posted.append((dict(obj), event))
    await driver.answer_orphan_approval("tenant-acme", "apr-1", "no-such-run")

    patch = cast(AsyncMock, driver.kube.patch_approval_status)
    namespace, name, status = patch.await_args.args
    assert (namespace, name) == ("tenant-acme", "apr-1")
    (condition,) = status["conditions"]
    assert condition["type"] == "Processed"
    assert condition["status"] == "True"
    assert condition["reason"] == status["reason"] == "RunNotFound"
    ((obj, event),) = posted
    assert obj["kind"] == "Approval"
    assert obj["metadata"] == {"name": "apr-1", "namespace": "tenant-acme"}
    assert (event.type, event.reason) == ("Warning", "RunNotFound")
