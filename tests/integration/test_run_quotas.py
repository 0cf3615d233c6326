"""Quotas for runs and the LLM planner, against the real control plane, Postgres, Redis,
node agent, API (tool gateway) and operator.

- toolCallsPerMinute: a tenant allowed 2 tool calls a minute runs 2 runs of 2 steps; the
  3rd and 4th Jobs start only once the window has room (RateLimited recorded), and
  every run completes.
- SBA_PLANNER=llm: the run follows the model's plan and `usage.tokens` is the model's usage;
  an unusable answer falls back (fallback model, then the builtin planner) and says why;
  over quotas.tokensPerDay the run fails with TokenQuotaExceeded.
- The operator's /metrics carries the counters with the tenant label.

`StubLLM` is a test double of a third-party OpenAI-compatible chat-completions provider
(an aiohttp server on its own thread); every other component is the real one.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from redis.asyncio import Redis

from sba_devstack.procs import free_port, log_tail
from sba_devstack.services import Service, http_ok
from sba_store.db import Pool
from sba_store.events import EventRepository
from sba_store.plans import RunPlanRepository, TokenUsageRepository
from sba_store.ratelimit import Limit, RateLimiter
from tests.fixtures.controlplane import Kubectl
from tests.fixtures.stack import wait_for
from tests.integration.test_operator import apply, get_json, operator_env, tenant_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RL_TENANT = "quota-rl"
LLM_TENANT = "quota-llm"
TQ_TENANT = "quota-tokens"
PRIMARY = "primary-model"
BACKUP = "backup-model"
API_KEY = "sk-test-" + secrets.token_hex(8)

GOOD_USAGE = {"prompt_tokens": 111, "completion_tokens": 22}  # 133
BAD_USAGE = {"prompt_tokens": 50, "completion_tokens": 7}  # 57

STUB_PLAN = {
    "rationale": "look it up, then write it down",
    "steps": [
        {"id": "lookup", "tool": "knowledge.search", "params": {"query": "refund window"}},
        {
            "id": "brief",
            "tool": "render.document",
            "params": {"title": "Stub plan title", "sources": ["lookup"]},
        },
    ],
}


class StubLLM:
    """An OpenAI-compatible `/v1/chat/completions`: a valid plan, or garbage when the prompt
    says GARBAGE (for every model) or GARBAGE-PRIMARY (for the primary model only)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"auth": request.headers.get("Authorization"), "body": body})
        model = body.get("model")
        prompt = body["messages"][-1]["content"]
        garbage = "GARBAGE-PRIMARY" in prompt and model == PRIMARY
        garbage = garbage or ("GARBAGE" in prompt and "GARBAGE-PRIMARY" not in prompt)
        content = "Sure! I would search first and then write." if garbage else json.dumps(STUB_PLAN)
        usage = BAD_USAGE if garbage else GOOD_USAGE
        return web.json_response(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {**usage, "total_tokens": sum(usage.values())},
            }
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> StubLLM:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: Any) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def system(
    crds_installed: None,
    node_agent: Any,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
    kubectl: Kubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    port = free_port()
    metrics_port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("quotas")
    with StubLLM() as llm:
        env = {
            **operator_env(kubeconfig, app_dsn, redis_url, api_url, secrets.token_urlsafe(48)),
            "SBA_API_HOST": "127.0.0.1",
            "SBA_API_PORT": str(port),
            "SBA_PUBLIC_URL": api_url,
            "SBA_JWT_HS256_SECRET": secrets.token_urlsafe(48),
            "SBA_PLANNER": "llm",
            "OPENAI_API_KEY": API_KEY,
            "SBA_LLM_BASE_URL": llm.url,
            "SBA_LLM_MODEL": PRIMARY,
            "SBA_LLM_FALLBACK_MODEL": BACKUP,
            # The stub plans; answers come from the offline model (not metered).
            "SBA_LLM_PROVIDER": "builtin",
            "SBA_OPERATOR_METRICS_PORT": str(metrics_port),
        }
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        api = Service("api", env, logs / "api.log", ready=http_ok(f"{api_url}/readyz")).start()
        operator = Service("operator", env, logs / "operator.log", ready=http_ok(metrics_url))
        operator.start()
        try:
            tenants = {
                RL_TENANT: {"toolCallsPerMinute": 2},
                LLM_TENANT: {},
                TQ_TENANT: {"tokensPerDay": 100},
            }
            for name, quotas in tenants.items():
                manifest = tenant_manifest(name)
                if quotas:
                    manifest["spec"]["quotas"] = quotas
                apply(kubectl, manifest)
            for name in tenants:
                wait_for(
                    lambda n=name: (
                        (get_json(kubectl, "tenant", n) or {}).get("status", {}).get("phase")
                        == "ready"
                    ),
                    timeout=90,
                    what=f"tenant {name} ready",
                )
            yield {"operator": operator, "api": api, "llm": llm, "metrics_url": metrics_url}
        finally:
            operator.stop()
            api.stop()
            print(f"logs: {logs}")


@pytest_asyncio.fixture(loop_scope="session")
async def events(pg_pool: Pool) -> EventRepository:
    return EventRepository(pg_pool)


def run(name: str, tenant: str, prompt: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": f"tenant-{tenant}"},
        "spec": {"tenant": tenant, "prompt": prompt, **spec},
    }


def finished(
    kubectl: Kubectl, system: dict[str, Any], name: str, tenant: str, timeout: float = 240
) -> dict[str, Any]:
    operator: Service = system["operator"]

    def check() -> dict[str, Any] | None:
        assert operator.running, log_tail(operator.log_path)
        obj = get_json(kubectl, "agentrun", name, "-n", f"tenant-{tenant}") or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get("phase") in ("completed", "failed", "cancelled") else None

    try:
        result: dict[str, Any] = wait_for(check, timeout=timeout, what=f"run {name} finished")
    except AssertionError:
        print(log_tail(operator.log_path, 80))
        raise
    return result


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def created_at(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


# -- the shared limiter against the real Redis ---------------------------------------------


async def test_sliding_window_refuses_then_admits_and_never_counts_a_member_twice(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    try:
        limiter = RateLimiter(redis, window_seconds=2)
        key = RateLimiter.tool_calls_key(f"unit-{uuid.uuid4().hex[:8]}")
        limits = [Limit("tool_calls", key, 2)]
        assert (await limiter.hit(limits, member="run:a:1")).admitted
        assert (await limiter.hit(limits, member="run:a:1")).admitted  # the same attempt again
        assert (await limiter.hit(limits, member="run:b:1")).admitted
        refused = await limiter.hit(limits, member="run:c:1")
        assert not refused.admitted
        assert refused.scope == "tool_calls"
        assert 0 < refused.retry_after_ms <= 2000
        assert await redis.zcard(key) == 2  # the refusal counted nothing
        await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)
        assert (await limiter.hit(limits, member="run:c:1")).admitted
    finally:
        await redis.aclose()


async def test_an_unreachable_redis_admits() -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        limiter = RateLimiter(redis, window_seconds=60)
        decision = await limiter.hit([Limit("tool_calls", "sba:rl:tools:x", 1)], member="m")
        assert decision.admitted
    finally:
        await redis.aclose()


# -- tool calls per minute -------------------------------------------------------------------


async def test_tool_calls_per_minute_hold_later_jobs_until_the_window_frees(
    system: dict[str, Any], kubectl: Kubectl, events: EventRepository
) -> None:
    plan = [
        {"id": "first", "tool": "knowledge.search", "params": {"query": "refunds"}},
        {"id": "second", "tool": "knowledge.search", "params": {"query": "shipping"}},
    ]
    names = ("rl-one", "rl-two")
    for name in names:
        apply(kubectl, run(name, RL_TENANT, "two searches", plan=plan))
    statuses = {name: finished(kubectl, system, name, RL_TENANT, timeout=300) for name in names}
    for name, status in statuses.items():
        assert status["phase"] == "completed", json.dumps(status, indent=2)
        assert status["usage"]["toolCalls"] == 2, name

    jobs = (get_json(kubectl, "jobs", "-n", f"tenant-{RL_TENANT}") or {}).get("items") or []
    by_step: dict[str, list[datetime]] = {"first": [], "second": []}
    for job in jobs:
        by_step[job["metadata"]["labels"]["sba-agentic.io/step"]].append(created_at(job))
    assert len(by_step["first"]) == 2
    assert len(by_step["second"]) == 2
    # The 3rd and 4th Jobs waited for the 60 s window (Redis and the API server share a
    # clock here; 2 s of slack for whole-second timestamps).
    window_opens = min(by_step["first"]) + timedelta(seconds=58)
    assert all(at >= window_opens for at in by_step["second"]), by_step

    limited_runs = 0
    for status in statuses.values():
        recorded = await events.list_after(uuid.UUID(status["runId"]), tenant_id=RL_TENANT)
        keys = [e.dedupe_key or "" for e in recorded]
        limited = [e for e in recorded if e.type == "rate_limited"]
        if not limited:
            continue
        limited_runs += 1
        assert limited[0].payload["stepId"] == "second"
        assert limited[0].payload["toolCallsPerMinute"] == 2
        assert datetime.fromisoformat(limited[0].payload["retryAt"]) > limited[0].ts - timedelta(
            seconds=1
        )
        # Deduplicated, and the step started only after it was refused.
        assert len(keys) == len(set(keys))
        assert keys.index(limited[0].dedupe_key or "") < keys.index("step:second:1:started")
    assert limited_runs == 2

    text = scrape(system["metrics_url"])
    violations = metric(text, "rate_limit_violations_total", tenant=RL_TENANT, scope="tool_calls")
    assert violations is not None
    assert violations >= 2
    succeeded = metric(
        text, "tool_calls_total", tenant=RL_TENANT, tool="knowledge.search", outcome="succeeded"
    )
    assert succeeded == 4


# -- the LLM planner ---------------------------------------------------------------------------


async def test_llm_plan_is_followed_and_its_tokens_metered(
    system: dict[str, Any], kubectl: Kubectl, events: EventRepository, pg_pool: Pool
) -> None:
    apply(kubectl, run("llm-plan", LLM_TENANT, "What is our refund window?"))
    status = finished(kubectl, system, "llm-plan", LLM_TENANT)
    assert status["phase"] == "completed", json.dumps(status, indent=2)
    assert [(s["id"], s["tool"]) for s in status["steps"]] == [
        ("lookup", "knowledge.search"),
        ("brief", "render.document"),
    ]
    assert status["steps"][0]["params"]["query"] == "refund window"
    assert status["usage"]["tokens"] == 133
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert PRIMARY in planned["message"]

    asked = [r for r in system["llm"].requests if "refund window?" in json.dumps(r["body"])]
    assert len(asked) == 1  # planned once, though reconciled many times
    assert asked[0]["auth"] == f"Bearer {API_KEY}"
    assert asked[0]["body"]["model"] == PRIMARY
    assert "knowledge.search" in asked[0]["body"]["messages"][0]["content"]

    run_id = uuid.UUID(status["runId"])
    recorded = await events.list_after(run_id, tenant_id=LLM_TENANT)
    ready = next(e for e in recorded if e.type == "plan_ready")
    assert ready.payload["planner"] == "llm"
    assert ready.payload["model"] == PRIMARY
    assert ready.payload["tokensUsed"] == 133
    assert not [e for e in recorded if e.type == "plan_fallback"]
    stored = await RunPlanRepository(pg_pool).get(run_id, tenant_id=LLM_TENANT)
    assert stored is not None
    assert (stored.prompt_tokens, stored.completion_tokens, stored.model) == (111, 22, PRIMARY)
    today = datetime.now(UTC).date()
    assert await TokenUsageRepository(pg_pool).tokens_on(LLM_TENANT, today) >= 133

    text = scrape(system["metrics_url"])
    tokens = metric(text, "llm_tokens_total", tenant=LLM_TENANT)
    assert tokens is not None
    assert tokens >= 133
    assert metric(text, "runs_by_phase", tenant=LLM_TENANT, phase="completed") is not None
    assert metric(text, "agent_run_duration_seconds_count", tenant=LLM_TENANT) is not None
    assert metric(text, "operator_reconcile_duration_seconds_count", outcome="ok") is not None


async def test_an_unusable_answer_falls_back_to_the_fallback_model(
    system: dict[str, Any], kubectl: Kubectl, events: EventRepository
) -> None:
    apply(kubectl, run("llm-backup", LLM_TENANT, "GARBAGE-PRIMARY: refund window?"))
    status = finished(kubectl, system, "llm-backup", LLM_TENANT)
    assert status["phase"] == "completed", json.dumps(status, indent=2)
    assert [s["id"] for s in status["steps"]] == ["lookup", "brief"]
    assert status["usage"]["tokens"] == 57 + 133  # the unusable answer was paid for too
    recorded = await events.list_after(uuid.UUID(status["runId"]), tenant_id=LLM_TENANT)
    (fallback,) = [e for e in recorded if e.type == "plan_fallback"]
    assert fallback.payload["model"] == BACKUP
    (reason,) = fallback.payload["reasons"]
    assert PRIMARY in reason
    assert "not JSON" in reason


async def test_garbage_from_every_model_falls_back_to_the_builtin_planner(
    system: dict[str, Any], kubectl: Kubectl, events: EventRepository
) -> None:
    apply(kubectl, run("llm-garbage", LLM_TENANT, "GARBAGE: what is the refund window?"))
    status = finished(kubectl, system, "llm-garbage", LLM_TENANT)
    assert status["phase"] == "completed", json.dumps(status, indent=2)
    assert [s["tool"] for s in status["steps"]] == ["knowledge.search", "llm.generate"]
    assert [s["id"] for s in status["steps"]] == ["search", "answer"]  # the builtin plan
    assert status["usage"]["tokens"] == 2 * 57
    recorded = await events.list_after(uuid.UUID(status["runId"]), tenant_id=LLM_TENANT)
    (fallback,) = [e for e in recorded if e.type == "plan_fallback"]
    assert fallback.payload["planner"] == "builtin"
    reasons = fallback.payload["reasons"]
    assert [r.split(":")[0] for r in reasons[:2]] == [f"model {PRIMARY}", f"model {BACKUP}"]
    assert all("not JSON" in r for r in reasons[:2])
    assert "builtin" in reasons[-1]


async def test_over_the_token_quota_the_run_fails_with_token_quota_exceeded(
    system: dict[str, Any], kubectl: Kubectl
) -> None:
    # 100 tokens a day: the first plan (133 tokens) is allowed (0 used), the second is not.
    apply(kubectl, run("tq-one", TQ_TENANT, "What is our refund window?"))
    first = finished(kubectl, system, "tq-one", TQ_TENANT)
    assert first["phase"] == "completed", json.dumps(first, indent=2)
    assert first["usage"]["tokens"] == 133
    asked_before = len(system["llm"].requests)
    apply(kubectl, run("tq-two", TQ_TENANT, "And the shipping costs?"))
    second = finished(kubectl, system, "tq-two", TQ_TENANT)
    assert second["phase"] == "failed"
    assert second["reason"] == "TokenQuotaExceeded"
    assert "133 of its 100" in second["message"]
    assert second.get("steps", []) == []
    assert len(system["llm"].requests) == asked_before  # the model was not asked
