"""task.create, crm.sync and http.fetch: contracts, registry entries, the step envelope's
config, and the tools' own logic with the gateway and the network replaced by fakes."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from pydantic import ValidationError

from sba_api.errors import ServiceUnavailable
from sba_api.services.step_config import StepConfigSource, allowlist_of
from sba_api.settings import Settings, SettingsError, ToolSettings
from sba_core.tools.contracts import (
    CrmSyncParams,
    HttpFetchParams,
    HttpFetchResult,
    TaskCreateParams,
    TaskCreateResult,
    TaskFields,
    step_idempotency_key,
)
from sba_core.tools.egress import AddressPolicy
from sba_core.tools.names import ToolName
from sba_core.tools.registry import builtin_registry
from sba_tools.egress import EgressRefused, HttpResponse, raise_for_status
from sba_tools.errors import StepFailure
from sba_tools.gateway import StepEnvelope, TaskReceipt
from sba_tools.jsonlog import JsonLogger
from sba_tools.tools import crm_sync, http_fetch, implementation_for, task_create
from sba_tools.tools.base import ToolContext

RUN_ID = "6f1c2a9e-0000-4000-8000-00000000000a"

# --- the registry ------------------------------------------------------------------------


def test_side_effect_tools_are_declared_truthfully() -> None:
    registry = builtin_registry()
    task = registry[ToolName.TASK_CREATE]
    crm = registry[ToolName.CRM_SYNC]
    fetch = registry[ToolName.HTTP_FETCH]
    assert (task.side_effect, task.scopes) == (True, ("write:tasks",))
    assert (crm.side_effect, crm.scopes) == (True, ("write:crm",))
    assert (fetch.side_effect, fetch.scopes) == (False, ("read:web",))
    assert crm.cost_estimate > task.cost_estimate > 0
    assert all(isinstance(s.cost_estimate, int) for s in (task, crm, fetch))
    assert [s.egress for s in (task, crm, fetch)] == [True, True, True]
    assert not registry[ToolName.KNOWLEDGE_SEARCH].egress
    entry = crm.catalog_entry()
    assert entry["sideEffect"] is True
    assert entry["scopes"] == ["write:crm"]
    assert "contacts" in entry["paramsSchema"]["properties"]
    for name in (ToolName.TASK_CREATE, ToolName.CRM_SYNC, ToolName.HTTP_FETCH):
        assert implementation_for(name) is not None


# --- contracts ---------------------------------------------------------------------------


def test_task_params() -> None:
    params = TaskCreateParams.model_validate(
        {"title": "  Call back  ", "dueDate": "2030-01-31", "webhookUrl": "https://hooks.test/x"}
    )
    assert params.title == "Call back"
    assert params.wire() == {
        "title": "Call back",
        "dueDate": "2030-01-31",
        "webhookUrl": "https://hooks.test/x",
    }
    for bad in (
        {"title": ""},
        {"title": "x" * 201},
        {"title": "t", "dueDate": "tomorrow"},
        {"title": "t", "webhookUrl": "ftp://hooks.test/"},
        {"title": "t", "webhookUrl": "https://user:pw@hooks.test/"},
        {"title": "t", "priority": "high"},
    ):
        with pytest.raises(ValidationError):
            TaskCreateParams.model_validate(bad)
    assert TaskFields.of(params).wire() == {"title": "Call back", "dueDate": "2030-01-31"}


def test_crm_params() -> None:
    params = CrmSyncParams.model_validate(
        {
            "contacts": [{"email": "ana@example.com", "name": "Ana"}],
            "deals": [{"name": "Renewal", "amount": 1200.5, "stage": "won"}],
            "mode": "upsert",
        }
    )
    assert params.contacts[0].email == "ana@example.com"
    bad: dict[str, Any]
    for bad in (
        {},
        {"contacts": [], "deals": []},
        {"contacts": [{"email": "not-an-email"}]},
        {"deals": [{"name": "D", "amount": -1, "stage": "open"}]},
        {"deals": [{"name": "D", "amount": float("nan"), "stage": "open"}]},
        {"contacts": [{"email": "a@b.co"}], "mode": "replace"},
    ):
        with pytest.raises(ValidationError):
            CrmSyncParams.model_validate(bad)


def test_fetch_params_and_result_wire_names() -> None:
    assert HttpFetchParams.model_validate({"url": "http://a.test/"}).max_bytes == 256 * 1024
    for bad in (
        {"url": "file:///etc/passwd"},
        {"url": "http://a.test/", "maxBytes": 1024 * 1024 + 1},
        {"url": "http://a.test/", "maxBytes": 0},
        {"url": "http://a.test/", "timeoutSeconds": 0},
    ):
        with pytest.raises(ValidationError):
            HttpFetchParams.model_validate(bad)
    result = HttpFetchResult(
        url="u", final_url="f", status=200, text="t", truncated=False, byte_count=1
    )
    assert set(result.wire()) == {"url", "finalUrl", "status", "text", "truncated", "bytes"}


def test_idempotency_key_is_per_step_not_per_attempt() -> None:
    assert step_idempotency_key(RUN_ID, "create") == f"{RUN_ID}:create"
    envelope = StepEnvelope.model_validate(
        {"runId": RUN_ID, "tenant": "acme", "stepId": "s", "attempt": 3, "tool": "crm.sync"}
    )
    assert envelope.step_key == f"{RUN_ID}:s"  # derived when an older gateway sent none
    assert envelope.config.egress_allowlist == []
    envelope = StepEnvelope.model_validate(
        {
            "runId": RUN_ID,
            "tenant": "acme",
            "stepId": "s",
            "attempt": 1,
            "tool": "http.fetch",
            "idempotencyKey": "k",
            "config": {"egressAllowlist": ["a.test"], "crmUrl": None, "futureField": 1},
        }
    )
    assert envelope.step_key == "k"
    assert envelope.config.egress_allowlist == ["a.test"]


# --- API settings and the envelope's config ------------------------------------------------

BASE_ENV = {
    "DATABASE_URL": "postgresql://u@db/sba",
    "REDIS_URL": "redis://redis:6379/0",
    "SBA_STEP_TOKEN_SECRET": "s" * 32,
    "SBA_JWT_HS256_SECRET": "j" * 32,
}


def test_tool_settings_from_env() -> None:
    assert Settings.from_env(BASE_ENV).tools == ToolSettings()
    settings = Settings.from_env(
        {
            **BASE_ENV,
            "SBA_CRM_URL": "http://crm-adapter.crm.svc:8080/sync",
            "SBA_DEFAULT_EGRESS_ALLOWLIST": "Example.com, *.docs.example.org,,",
            "SBA_EGRESS_ALLOWLIST_CACHE_SECONDS": "5",
        }
    )
    assert settings.tools.crm_url == "http://crm-adapter.crm.svc:8080/sync"
    assert settings.tools.default_egress_allowlist == ("example.com", "*.docs.example.org")
    assert settings.tools.egress_cache_seconds == 5
    with pytest.raises(SettingsError, match="SBA_DEFAULT_EGRESS_ALLOWLIST"):
        Settings.from_env({**BASE_ENV, "SBA_DEFAULT_EGRESS_ALLOWLIST": "http://x.test/"})
    with pytest.raises(SettingsError, match="SBA_CRM_URL"):
        Settings.from_env({**BASE_ENV, "SBA_CRM_URL": "crm:8080"})


def test_allowlist_of_a_tenant_resource() -> None:
    assert allowlist_of(None) is None
    assert allowlist_of({"spec": {"displayName": "Acme"}}) is None
    assert allowlist_of({"spec": {"egressAllowlist": []}}) == []
    tenant = {"spec": {"egressAllowlist": ["API.acme.test", "http://bad/", "api.acme.test"]}}
    assert allowlist_of(tenant) == ["api.acme.test"]


async def test_step_config_source() -> None:
    registry = builtin_registry()
    tenants: dict[str, dict[str, Any] | None] = {
        "acme": {"spec": {"egressAllowlist": ["*.acme.test"]}},
        "plain": {"spec": {}},
    }
    fetched: list[str] = []
    failing = False
    now = [0.0]

    async def fetch(name: str) -> dict[str, Any] | None:
        fetched.append(name)
        if failing:
            raise ServiceUnavailable("kubernetes is down")
        return tenants.get(name)

    source = StepConfigSource(
        ToolSettings(
            crm_url="http://crm.test/sync",
            default_egress_allowlist=("default.test",),
            egress_cache_seconds=30,
        ),
        fetch,
        clock=lambda: now[0],
    )
    fetch_spec = registry[ToolName.HTTP_FETCH]
    config = await source.for_step("acme", fetch_spec)
    assert (config.egress_allowlist, config.crm_url) == (["*.acme.test"], None)
    assert (await source.for_step("plain", fetch_spec)).egress_allowlist == ["default.test"]
    assert (await source.for_step("ghost", fetch_spec)).egress_allowlist == ["default.test"]
    # Only egress tools look anything up; crm.sync gets the CRM endpoint and no allowlist.
    fetched.clear()
    crm = await source.for_step("acme", registry[ToolName.CRM_SYNC])
    assert (crm.egress_allowlist, crm.crm_url) == ([], "http://crm.test/sync")
    search = await source.for_step("acme", registry[ToolName.KNOWLEDGE_SEARCH])
    assert (search.egress_allowlist, search.crm_url) == ([], None)
    assert fetched == []
    # Cached, then refreshed; a failed refresh keeps the last answer, no answer at all fails.
    await source.for_step("acme", fetch_spec)
    assert fetched == []
    now[0] = 31
    failing = True
    assert (await source.for_step("acme", fetch_spec)).egress_allowlist == ["*.acme.test"]
    with pytest.raises(ServiceUnavailable):
        await source.for_step("newcomer", fetch_spec)


# --- the tools with fakes ---------------------------------------------------------------


@dataclass
class FakeGateway:
    created: list[dict[str, Any]] = field(default_factory=list)
    replay: bool = False

    def create_task(self, fields: TaskFields) -> TaskReceipt:
        self.created.append(fields.wire())
        return TaskReceipt(
            task_id="task-1",
            created=not self.replay,
            idempotency_key=f"{RUN_ID}:create",
            title=fields.title,
            due_date=fields.due_date.isoformat() if fields.due_date else None,
        )


@dataclass
class FakeHttp:
    responses: list[HttpResponse] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    refuse: bool = False

    def check(
        self, url: str, allowlist: Sequence[str] | None, *, policy: AddressPolicy | None = None
    ) -> list[Any]:
        self.calls.append({"check": url, "allowlist": allowlist})
        if self.refuse:
            raise EgressRefused(f"refused {url!r}: not on the tenant's egress allowlist")
        return []

    def request(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        self.calls.append({"method": method, "url": url, **kwargs})
        if self.refuse:
            raise EgressRefused(f"refused {url!r}")
        return self.responses.pop(0)


def _ctx(
    tool: str, gateway: FakeGateway, http: FakeHttp, config: Mapping[str, Any] | None = None
) -> ToolContext:
    step = StepEnvelope.model_validate(
        {
            "runId": RUN_ID,
            "tenant": "acme",
            "stepId": "create",
            "attempt": 2,
            "tool": tool,
            "idempotencyKey": f"{RUN_ID}:create",
            "config": dict(config or {}),
        }
    )
    return ToolContext(
        gateway=cast(Any, gateway),
        step=step,
        now=lambda: datetime(2030, 1, 1, tzinfo=UTC),
        log=JsonLogger(stream=io.StringIO()),
        http=cast(Any, http),
    )


def _response(status: int, body: bytes = b"", content_type: str | None = None) -> HttpResponse:
    return HttpResponse(
        url="http://x.test/",
        status=status,
        headers={},
        body=body,
        truncated=False,
        content_type=content_type,
    )


def test_task_create_without_webhook() -> None:
    gateway, http = FakeGateway(), FakeHttp()
    params = TaskCreateParams(title="Call Ana", assignee="bo")
    result = task_create.run(_ctx("task.create", gateway, http), params)
    assert result == TaskCreateResult(task_id="task-1", created=True, delivered=False)
    assert gateway.created == [{"title": "Call Ana", "assignee": "bo"}]
    assert http.calls == []
    assert task_create.summarize(result) == "task task-1 created"


def test_task_create_delivers_with_the_step_key() -> None:
    gateway = FakeGateway(replay=True)
    http = FakeHttp(responses=[_response(202)])
    params = TaskCreateParams(title="Call Ana", webhook_url="https://hooks.acme.test/t")
    ctx = _ctx("task.create", gateway, http, {"egressAllowlist": ["hooks.acme.test"]})
    result = task_create.run(ctx, params)
    assert result == TaskCreateResult(task_id="task-1", created=False, delivered=True)
    post = http.calls[1]
    assert post["method"] == "POST"
    assert post["allowlist"] == ["hooks.acme.test"]
    assert post["headers"]["Idempotency-Key"] == f"{RUN_ID}:create"
    assert json.loads(post["body"])["task"]["id"] == "task-1"
    assert "already created" in task_create.summarize(result)


def test_task_create_refuses_a_webhook_before_any_side_effect() -> None:
    gateway, http = FakeGateway(), FakeHttp(refuse=True)
    params = TaskCreateParams(title="t", webhook_url="http://169.254.169.254/")
    with pytest.raises(EgressRefused):
        task_create.run(_ctx("task.create", gateway, http), params)
    assert gateway.created == []


def test_task_create_webhook_failures_are_classified() -> None:
    params = TaskCreateParams(title="t", webhook_url="https://hooks.acme.test/t")
    for status, retryable in ((500, True), (429, True), (404, False), (302, False)):
        http = FakeHttp(responses=[_response(status)])
        with pytest.raises(StepFailure) as caught:
            task_create.run(_ctx("task.create", FakeGateway(), http), params)
        assert caught.value.retryable is retryable, status


def test_crm_sync_posts_once_with_the_key() -> None:
    http = FakeHttp(responses=[_response(200, b'{"remoteId": "crm-9"}')])
    params = CrmSyncParams.model_validate(
        {"contacts": [{"email": "ana@example.com"}], "deals": [], "mode": "upsert"}
    )
    ctx = _ctx("crm.sync", FakeGateway(), http, {"crmUrl": "http://crm.test/sync"})
    result = crm_sync.run(ctx, params)
    assert result.wire() == {"synced": {"contacts": 1, "deals": 0}, "remoteId": "crm-9"}
    call = http.calls[0]
    assert (call["method"], call["url"], call["allowlist"]) == (
        "POST",
        "http://crm.test/sync",
        None,
    )
    assert call["headers"]["Idempotency-Key"] == f"{RUN_ID}:create"
    assert call["headers"]["X-SBA-Run-Id"] == RUN_ID
    body = json.loads(call["body"])
    assert body["contacts"] == [{"email": "ana@example.com"}]
    assert body["idempotencyKey"] == f"{RUN_ID}:create"
    assert crm_sync.summarize(result) == "synced 1 contact(s) and 0 deal(s) (remote crm-9)"


def test_crm_sync_failures() -> None:
    params = CrmSyncParams.model_validate({"deals": [{"name": "D", "amount": 1, "stage": "won"}]})
    with pytest.raises(StepFailure, match="SBA_CRM_URL") as caught:
        crm_sync.run(_ctx("crm.sync", FakeGateway(), FakeHttp()), params)
    assert caught.value.retryable is False
    for status, retryable in ((400, False), (409, False), (503, True), (408, True)):
        http = FakeHttp(responses=[_response(status, b"nope")])
        ctx = _ctx("crm.sync", FakeGateway(), http, {"crmUrl": "http://crm.test/"})
        with pytest.raises(StepFailure, match=f"HTTP {status}") as caught:
            crm_sync.run(ctx, params)
        assert caught.value.retryable is retryable


def test_crm_answer_parsing() -> None:
    params = CrmSyncParams.model_validate(
        {"contacts": [{"email": "a@b.co"}, {"email": "c@d.co"}], "deals": []}
    )
    assert crm_sync.parse_answer(b"", params).wire() == {"synced": {"contacts": 2, "deals": 0}}
    assert crm_sync.parse_answer(b"not json", params).synced.contacts == 2
    stated = crm_sync.parse_answer(b'{"id": 7, "synced": {"contacts": 1, "deals": 0}}', params)
    assert stated.wire() == {"synced": {"contacts": 1, "deals": 0}, "remoteId": "7"}
    odd = crm_sync.parse_answer(b'{"synced": {"contacts": -1}}', params)
    assert odd.synced.contacts == 2


def test_http_fetch_result() -> None:
    page = "<h1>Héllo</h1>".encode()
    http = FakeHttp(
        responses=[
            HttpResponse(
                url="https://www.acme.test/final",
                status=200,
                headers={},
                body=page,
                truncated=True,
                redirects=["https://www.acme.test/final"],
                content_type="text/html; charset=utf-8",
            )
        ]
    )
    ctx = _ctx("http.fetch", FakeGateway(), http, {"egressAllowlist": ["*.acme.test"]})
    params = HttpFetchParams(url="https://acme.test/start", max_bytes=1000, timeout_seconds=5)
    result = http_fetch.run(ctx, params)
    assert result.wire() == {
        "url": "https://acme.test/start",
        "finalUrl": "https://www.acme.test/final",
        "status": 200,
        "contentType": "text/html; charset=utf-8",
        "text": "<h1>Héllo</h1>",
        "truncated": True,
        "bytes": len(page),
    }
    call = http.calls[0]
    assert (call["method"], call["max_redirects"], call["max_bytes"]) == ("GET", 3, 1000)
    assert call["allowlist"] == ["*.acme.test"]
    summary = http_fetch.summarize(result)
    assert "HTTP 200" in summary
    assert "truncated" in summary


def test_http_fetch_decoding() -> None:
    assert http_fetch.decode_body("café".encode("latin-1"), "text/plain; charset=ISO-8859-1") == (
        "café"
    )
    assert http_fetch.decode_body(b'{"a":1}', "application/problem+json") == '{"a":1}'
    assert http_fetch.decode_body(b"\x89PNG\r\n", "image/png") == ""
    assert http_fetch.decode_body(b"abc", "text/plain; charset=nonsense") == "abc"
    assert http_fetch.decode_body(b"\xff", "text/plain") == "\ufffd"
    text, clipped = http_fetch.clip_for_json("a" * 100, limit=52)
    assert (len(text), clipped) == (50, True)
    text, clipped = http_fetch.clip_for_json("\u0001" * 100, limit=62)
    assert (len(json.dumps(text)) <= 62, clipped) == (True, True)
    assert http_fetch.clip_for_json("short") == ("short", False)


def test_raise_for_status() -> None:
    raise_for_status("x", _response(204))
    with pytest.raises(StepFailure, match="HTTP 422: bad field") as caught:
        raise_for_status("x", _response(422, b"bad field"))
    assert caught.value.retryable is False
