"""Model steps end to end: a question's answer streams token by token over SSE and AG-UI,
resumes after a dropped connection, survives a SIGKILLed API mid-answer, and becomes the
run's result — on the real control plane, Postgres and Redis, with the builtin model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from sba_devstack.openai_standin import OpenAIStandIn
from tests.e2e.sse_client import SseEvent, collect, iter_events
from tests.fixtures.stack import Stack, apply_tenant, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QUESTION = "Bagaimana kebijakan refund untuk barang rusak?"


async def _create(session: aiohttp.ClientSession, stack: Stack, tenant: str, **body: Any) -> Any:
    async with session.post(
        f"{stack.api_url}/api/v1/runs", json={"tenant": tenant, **body}
    ) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def _until_first_token(session: aiohttp.ClientSession, url: str) -> None:
    """Follow the run's events until its answer starts streaming."""
    async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
        async for item in iter_events(resp):
            if isinstance(item, SseEvent) and item.event == "token":
                return
    raise AssertionError("the run's answer never streamed")


def _tokens(events: list[SseEvent]) -> list[dict[str, Any]]:
    return [e.json["payload"] for e in events if e.event == "token"]


def _assert_contiguous(tokens: list[dict[str, Any]]) -> str:
    """Offsets follow each other exactly: no gap, no repeat. Returns the text."""
    assert tokens, "no token events"
    offset = 0
    for token in tokens:
        assert token["offset"] == offset, (token, offset)
        offset += len(token["text"])
    return "".join(t["text"] for t in tokens)


async def _requests(llm: OpenAIStandIn) -> list[dict[str, Any]]:
    """What the stand-in model was asked, in order."""
    url = llm.base_url.removesuffix("/v1") + "/_control/requests"
    async with aiohttp.ClientSession() as control, control.get(url) as resp:
        body: list[dict[str, Any]] = (await resp.json())["requests"]
    return body


def _run(stack: Stack, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The run once its status is final (events are written before status, so a client that
    saw the terminal event may read the status a moment before it says so)."""

    def final() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{run_id}", headers=headers)
        assert status == 200, run
        return run if run["phase"] in ("completed", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(final, timeout=30, interval=0.2, what=f"run {run_id} final")
    return result


async def test_a_question_streams_its_answer_and_resumes_after_a_drop(
    stack: Stack, demo_tenant: str
) -> None:
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        created = await _create(
            session, stack, demo_tenant, prompt=QUESTION, options={"locale": "id"}
        )
        url = stack.api_url + created["links"]["events"]
        # Read until the first token, then drop the connection mid-answer.
        first: list[SseEvent] = []
        async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
            async for item in iter_events(resp):
                if isinstance(item, SseEvent):
                    first.append(item)
                    if item.event == "token":
                        break
        assert first[-1].event == "token"
        _, rest = await collect(session, url, last_event_id=first[-1].id)
        _, full = await collect(session, url)
    seen = [e.id for e in first + rest]
    assert seen == [e.id for e in full]  # no gap and no repeat across the drop
    tokens = _tokens(full)
    assert len(tokens) > 1, "the answer did not stream"
    text = _assert_contiguous(tokens)
    assert full[-1].event == "completed"
    types = [e.event for e in full]
    assert types.index("token") > types.index("step_started")
    assert max(i for i, t in enumerate(types) if t == "token") < types.index("completed")
    run = _run(stack, created["id"])
    assert run["phase"] == "completed"
    answer = run["result"]["answer"]
    assert answer == text
    assert answer.startswith("Berdasarkan basis pengetahuan")
    assert "[1]" in answer
    assert "Sumber:" in answer
    assert [s["tool"] for s in run["steps"]] == ["knowledge.search", "llm.generate"]


async def test_agui_clients_get_the_answer_as_text_message_deltas(
    stack: Stack, demo_tenant: str
) -> None:
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        created = await _create(
            session, stack, demo_tenant, prompt="What is our refund policy for damaged goods?"
        )
        _, events = await collect(session, stack.api_url + created["links"]["events"])
        text = _assert_contiguous(_tokens(events))
        agui: list[dict[str, Any]] = []
        async with session.get(
            f"{stack.api_url}/api/v1/runs/{created['id']}/agui",
            headers={"Accept": "text/event-stream"},
        ) as resp:
            assert resp.status == 200
            async for item in iter_events(resp):
                if isinstance(item, SseEvent):
                    agui.append(item.json)
                    if item.json["type"] in ("RUN_FINISHED", "RUN_ERROR"):
                        break
    deltas = [e for e in agui if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert len(deltas) > 1
    message = f"{created['id']}/answer/a1"
    assert "".join(e["delta"] for e in deltas if e["messageId"] == message) == text
    assert not [e for e in deltas if e["messageId"] != message]  # the answer is not repeated
    types = [e["type"] for e in agui]
    assert types.count("TEXT_MESSAGE_START") == types.count("TEXT_MESSAGE_END") == 1
    assert agui[-1]["type"] == "RUN_FINISHED"
    assert text.startswith("Based on the knowledge base")


async def test_the_api_killed_mid_answer_loses_and_repeats_no_token(
    stack: Stack, demo_tenant: str
) -> None:
    assert stack.api is not None
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        created = await _create(
            session,
            stack,
            demo_tenant,
            prompt="What do we do with damaged goods, refunds and shipping abroad?",
            options={"topK": 8},
        )
        url = stack.api_url + created["links"]["events"]
        await _until_first_token(session, url)
        stack.api.kill()  # SIGKILL while the model step is writing
        await asyncio.sleep(0.5)
        stack.api.start()

        def finished() -> dict[str, Any] | None:
            try:
                run = _run(stack, created["id"])
            except OSError:
                return None
            return run if run["phase"] in ("completed", "failed") else None

        run = await asyncio.to_thread(wait_for, finished, 150, 0.5, "the run to finish")
        _, events = await collect(session, url)
    assert run["phase"] == "completed", run
    tokens = _tokens(events)
    assert {t["attempt"] for t in tokens} == {1}  # the same attempt resumed, not a retry
    text = _assert_contiguous(tokens)
    assert run["result"]["answer"] == text
    assert text.count("Based on the knowledge base") == 1


async def test_a_tenants_own_model_answers_through_the_gateway_with_fallback_and_quota(
    stack: Stack, kubectl: Any
) -> None:
    """A Tenant's spec.model (key in a Secret) is what the gateway calls, with the official
    SDK against an OpenAI-compatible stand-in; a failing model falls back; the day's tokens
    are metered, and a run over quotas.tokensPerDay fails without calling the model."""
    tenant = "e2e-model"
    answer = "Damaged goods are refunded in full within 30 days [1]."
    async with OpenAIStandIn(
        models=("main-model", "spare-model"), api_key="sk-e2e-model", token_delay_seconds=0.005
    ) as llm:
        async with aiohttp.ClientSession() as control:
            await control.post(
                llm.base_url.removesuffix("/v1") + "/_control/config",
                json={"failModels": {"main-model": 503}},
            )
            await control.post(
                llm.base_url.removesuffix("/v1") + "/_control/script",
                json={"model": "spare-model", "replies": [{"content": answer}]},
            )
        apply_tenant(
            kubectl,
            tenant,
            {
                "displayName": "E2E own model",
                "quotas": {"tokensPerDay": 100_000},
                "model": {
                    "provider": "openai",
                    "baseUrl": llm.base_url,
                    "model": "main-model",
                    "fallbackModel": "spare-model",
                    "apiKeySecretRef": {"name": "llm-key", "key": "apiKey"},
                },
            },
        )
        secret = kubectl(
            "create", "secret", "generic", "llm-key", "-n", f"tenant-{tenant}",
            "--from-literal=apiKey=sk-e2e-model",
        )  # fmt: skip
        assert secret.returncode == 0, secret.stderr
        headers = stack.auth(tenant=tenant)
        status, body = stack.post(
            "/api/v1/knowledge/documents",
            {
                "tenant": tenant,
                "title": "Refund policy",
                "content": "Damaged goods are refunded in full within 30 days of delivery.",
            },
            headers=headers,
        )
        assert status == 201, body
        async with aiohttp.ClientSession(headers=headers) as session:
            created = await _create(
                session, stack, tenant, prompt="How are damaged goods refunded?"
            )
            _, events = await collect(session, stack.api_url + created["links"]["events"])
            text = _assert_contiguous(_tokens(events))
            requests = await _requests(llm)
        assert text == answer
        run = await asyncio.to_thread(_run, stack, created["id"], headers)
        assert run["phase"] == "completed", run
        assert run["result"]["answer"] == answer
        assert "spare-model" in run["steps"][1]["summary"]
        models = [r["body"]["model"] for r in requests]
        assert models[0] == "main-model"
        assert models[-1] == "spare-model"
        spare = requests[-1]["body"]
        assert spare["stream"] is True
        user = next(m for m in spare["messages"] if m["role"] == "user")["content"]
        assert "How are damaged goods refunded?" in user
        assert "within 30 days of delivery" in user  # the search hit reached the model
        # Over the day's quota: the step fails before any model call.
        patched = kubectl(
            "patch", "tenant", tenant, "--type=merge", "-p",
            json.dumps({"spec": {"quotas": {"tokensPerDay": 1}}}),
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
        async with aiohttp.ClientSession(headers=headers) as session:
            refused = await _create(session, stack, tenant, prompt="And shipping?")
            await collect(session, stack.api_url + refused["links"]["events"])
        run = await asyncio.to_thread(_run, stack, refused["id"], headers)
        assert run["phase"] == "failed", run
        assert "tokensPerDay" in run["message"]
        assert len(await _requests(llm)) == len(requests)
    kubectl("delete", "tenant", tenant, "--wait=false")


async def test_the_operator_killed_mid_answer_loses_and_repeats_no_token(
    stack: Stack, demo_tenant: str
) -> None:
    """The model step runs in its Job and the API: an operator that dies meanwhile finds
    the step finished when it comes back, and nothing is streamed or run twice."""
    assert stack.operator is not None
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        created = await _create(
            session,
            stack,
            demo_tenant,
            prompt="How long does shipping abroad take, and what does it cost?",
            options={"topK": 8},
        )
        url = stack.api_url + created["links"]["events"]
        await _until_first_token(session, url)
        stack.operator.kill()  # SIGKILL while the answer streams
        await asyncio.sleep(2)
        stack.operator.start()
        run = await asyncio.to_thread(_run, stack, created["id"])
        _, events = await collect(session, url)
    assert run["phase"] == "completed", run
    tokens = _tokens(events)
    assert {t["attempt"] for t in tokens} == {1}
    assert run["result"]["answer"] == _assert_contiguous(tokens)
    assert [s["attempts"] for s in run["steps"]] == [1, 1]
    types = [e.event for e in events]
    assert types.count("step_started") == 2
    assert types.count("completed") == 1
