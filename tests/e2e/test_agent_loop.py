"""The agent loop end to end: the model reads each result and decides the next call.

Offline with the builtin model (search, then answer), and with an OpenAI-compatible
stand-in speaking streaming `tool_calls` exactly as OpenAI documents them: a side-effecting
call in the middle waits for a person's approval like any step, a denied one is reported
back to the model, and the model's last turn answers."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import aiohttp
import pytest

from sba_devstack.openai_standin import OpenAIStandIn
from tests.e2e.sse_client import SseEvent, collect, iter_events
from tests.fixtures.stack import Stack, apply_tenant, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TENANT = "e2e-loop"


async def _final(stack: Stack, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Polls in a thread: the stand-in model serves from this test's event loop."""

    def done() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{run_id}", headers=headers)
        assert status == 200, run
        return run if run["phase"] in ("completed", "failed", "cancelled") else None

    result: dict[str, Any] = await asyncio.to_thread(wait_for, done, 120, 0.25, f"run {run_id}")
    return result


async def test_offline_the_builtin_model_searches_then_answers(
    stack: Stack, demo_tenant: str
) -> None:
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        async with session.post(
            f"{stack.api_url}/api/v1/runs",
            json={
                "tenant": demo_tenant,
                "prompt": "What is our refund policy for damaged goods?",
                "mode": "loop",
            },
        ) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        _, events = await collect(session, stack.api_url + created["links"]["events"])
    run = await _final(stack, created["id"], stack.auth())
    assert run["phase"] == "completed", run
    assert [(s["id"], s["tool"]) for s in run["steps"]] == [
        ("turn-1", "llm.generate"),
        ("t1-1-knowledge-search", "knowledge.search"),
        ("turn-2", "llm.generate"),
    ]
    proposed = [e.json["payload"] for e in events if e.event == "step_proposed"]
    assert [p["tool"] for p in proposed] == ["knowledge.search"]
    assert "refund" in proposed[0]["params"]["query"].lower()
    assert run["result"]["answer"].startswith("Based on the knowledge base")
    assert "[1]" in run["result"]["answer"]
    assert [e.event for e in events].count("token") > 1


async def _ask(llm: OpenAIStandIn, path: str, body: dict[str, Any] | None = None) -> Any:
    url = llm.base_url.removesuffix("/v1") + "/_control" + path
    async with aiohttp.ClientSession() as control:
        if body is None:
            async with control.get(url) as resp:
                return await resp.json()
        async with control.post(url, json=body) as resp:
            return await resp.json()


def _crm(stack: Stack, path: str) -> Any:
    assert stack.crm_url is not None
    with urllib.request.urlopen(stack.crm_url + path, timeout=10) as resp:
        return json.loads(resp.read())


async def _wait_for_approval(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The approval request, once the run's status shows it too (the event is written first,
    the status just after: crash-safe order)."""
    payload: dict[str, Any] | None = None
    async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
        async for item in iter_events(resp):
            if isinstance(item, SseEvent) and item.event in ("awaiting_approval", "failed"):
                assert item.event == "awaiting_approval", item.data
                payload = item.json["payload"]
                break
    assert payload is not None, "the stream ended before the approval request"
    run_url = url.removesuffix("/events")
    for _ in range(100):
        async with session.get(run_url) as resp:
            steps = (await resp.json())["steps"]
        if any(s["id"] == payload["stepId"] and s["phase"] == "awaiting_approval" for s in steps):
            return payload
        await asyncio.sleep(0.1)
    raise AssertionError(f"step {payload['stepId']} never showed as awaiting approval")


async def test_the_model_drives_the_loop_through_an_approval_and_a_denial(
    stack: Stack, kubectl: Any
) -> None:
    async with OpenAIStandIn(models=("agent-model",), token_delay_seconds=0.002) as llm:
        apply_tenant(
            kubectl,
            TENANT,
            {
                "displayName": "E2E agent loop",
                "approvalPolicy": {"sideEffects": True},
                "model": {"provider": "openai", "baseUrl": llm.base_url, "model": "agent-model"},
            },
        )
        headers = stack.auth(tenant=TENANT, user="ayu", roles=("member", "approver"))
        status, body = stack.post(
            "/api/v1/knowledge/documents",
            {"tenant": TENANT, "title": "Customers", "content": "Budi is our newest customer."},
            headers=headers,
        )
        assert status == 201, body
        await _ask(
            llm,
            "/script",
            {
                "replies": [
                    {"tool_calls": [{"name": "knowledge__search", "arguments": {"query": "Budi"}}]},
                    {"tool_calls": [{"name": "crm__sync", "arguments": {"scope": ["contacts"]}}]},
                    {"content": "Budi's contact is synced to the CRM."},
                ]
            },
        )
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(
                f"{stack.api_url}/api/v1/runs",
                json={"tenant": TENANT, "prompt": "Sync Budi to the CRM", "mode": "loop"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                created = await resp.json()
            events_url = stack.api_url + created["links"]["events"]
            payload = await _wait_for_approval(session, events_url)
            assert payload["action"] == "crm.sync"
            assert payload["stepId"] == "t2-1-crm-sync"
            assert payload["scope"] == ["contacts"]
            async with session.post(
                f"{stack.api_url}/api/v1/runs/{created['id']}/approvals",
                json={"stepId": payload["stepId"], "approval": {"status": "approved"}},
            ) as resp:
                assert resp.status in (201, 202), await resp.text()
            run = await _final(stack, created["id"], headers)
            assert run["phase"] == "completed", run
            assert [s["id"] for s in run["steps"]] == [
                "turn-1",
                "t1-1-knowledge-search",
                "turn-2",
                "t2-1-crm-sync",
                "turn-3",
            ]
            assert run["result"]["answer"] == "Budi's contact is synced to the CRM."
            requests = [r["body"] for r in (await _ask(llm, "/requests"))["requests"]]
            assert len(requests) == 3
            offered = {t["function"]["name"] for t in requests[0]["tools"]}
            assert {"knowledge__search", "crm__sync"} <= offered
            assert "llm__generate" not in offered
            searched = requests[1]["messages"][-1]
            assert searched["role"] == "tool"
            assert "Budi is our newest customer" in searched["content"]
            synced = requests[2]["messages"][-1]
            assert synced["role"] == "tool"
            assert '"synced"' in synced["content"]

            # Again, and this time the person says no: the model hears why and answers.
            await _ask(llm, "/reset", {})
            await _ask(
                llm,
                "/script",
                {
                    "replies": [
                        {"tool_calls": [{"name": "crm__sync", "arguments": {"scope": ["deals"]}}]},
                        {"content": "I did not sync: it was denied."},
                    ]
                },
            )
            async with session.post(
                f"{stack.api_url}/api/v1/runs",
                json={"tenant": TENANT, "prompt": "Sync the deals to the CRM", "mode": "loop"},
            ) as resp:
                denied_run = await resp.json()
            payload = await _wait_for_approval(
                session, stack.api_url + denied_run["links"]["events"]
            )
            async with session.post(
                f"{stack.api_url}/api/v1/runs/{denied_run['id']}/approvals",
                json={
                    "stepId": payload["stepId"],
                    "approval": {"status": "denied", "reason": "not this week"},
                },
            ) as resp:
                assert resp.status in (201, 202), await resp.text()
            run = await _final(stack, denied_run["id"], headers)
        assert run["phase"] == "completed", run
        assert [s["phase"] for s in run["steps"]] == ["succeeded", "skipped", "succeeded"]
        told = (await _ask(llm, "/requests"))["requests"][-1]["body"]["messages"][-1]
        assert told["role"] == "tool"
        assert "denied by ayu: not this week" in told["content"]
        assert run["result"]["answer"] == "I did not sync: it was denied."
        assert _crm(stack, f"/synced?tenant={TENANT}")["applied"] == 1  # only the approved one
    kubectl("delete", "tenant", TENANT, "--wait=false")
