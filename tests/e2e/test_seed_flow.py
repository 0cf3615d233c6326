"""Seed 000's headline flow, whole: "Lanjutkan sinkronisasi CRM untuk kontak dan deal"
through the API plans crm.sync, waits in awaiting_approval with the seed's payload, is
approved through the API, syncs exactly once with the CRM stand-in, and completes."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import aiohttp
import pytest

from tests.e2e.sse_client import SseEvent, iter_events
from tests.fixtures.stack import Stack, apply_tenant, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TENANT = "e2e-seed"
CONTACTS = [
    {"email": "budi@majujaya.co.id", "name": "Budi Santoso", "company": "PT Maju Jaya"},
    {"email": "siti@nusantara.id", "name": "Siti Rahma"},
]
DEALS = [{"name": "Maju Jaya support", "amount": 120000000, "stage": "negotiation"}]


def _crm(stack: Stack, path: str, body: dict[str, Any] | None = None) -> Any:
    assert stack.crm_url is not None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        stack.crm_url + path,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def seed_tenant(stack: Stack, kubectl: Any) -> str:
    apply_tenant(
        kubectl, TENANT, {"displayName": "Seed flow", "approvalPolicy": {"sideEffects": True}}
    )
    return TENANT


async def test_crm_sync_waits_for_approval_then_syncs_exactly_once(
    stack: Stack, seed_tenant: str
) -> None:
    _crm(stack, "/_control/stage", {"tenant": seed_tenant, "contacts": CONTACTS, "deals": DEALS})
    headers = stack.auth(tenant=seed_tenant, user="ayu", roles=("member", "approver"))
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(
            f"{stack.api_url}/api/v1/runs",
            json={
                "tenant": seed_tenant,
                "prompt": "Lanjutkan sinkronisasi CRM untuk kontak dan deal",
                "options": {"locale": "id"},
            },
        ) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        waiting: SseEvent | None = None
        async with session.get(
            stack.api_url + created["links"]["events"], headers={"Accept": "text/event-stream"}
        ) as resp:
            async for item in iter_events(resp):
                if isinstance(item, SseEvent) and item.event in ("awaiting_approval", "failed"):
                    waiting = item
                    break
        assert waiting is not None
        assert waiting.event == "awaiting_approval", waiting.data
        payload = waiting.json["payload"]
        # The seed's event payload, bound to the exact action.
        assert payload["action"] == "crm.sync"
        assert payload["scope"] == ["contacts", "deals"]
        assert payload["requires"] == ["write:crm"]
        assert payload["costEstimate"] > 0
        assert payload["params"]["scope"] == ["contacts", "deals"]
        assert _crm(stack, f"/synced?tenant={seed_tenant}")["applied"] == 0  # nothing yet
        # The event is written just before the status (crash-safe order): wait for both.
        for _ in range(100):
            async with session.get(f"{stack.api_url}/api/v1/runs/{created['id']}") as resp:
                steps = (await resp.json()).get("steps") or []
            # Reads are eventually consistent (a watch cache): the status may be a moment behind.
            if steps and steps[0]["phase"] == "awaiting_approval":
                break
            await asyncio.sleep(0.1)

        async with session.post(
            f"{stack.api_url}/api/v1/runs/{created['id']}/approvals",
            json={
                "stepId": payload["stepId"],
                "approval": {"status": "approved", "reason": "Lanjutkan sinkronisasi CRM"},
            },
            headers={"Idempotency-Key": f"seed-{created['id']}"},
        ) as resp:
            assert resp.status in (201, 202), await resp.text()

    def finished() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{created['id']}", headers=headers)
        return run if status == 200 and run["phase"] in ("completed", "failed") else None

    run = wait_for(finished, timeout=120, what="the seed run to finish")
    assert run["phase"] == "completed", run
    (step,) = run["steps"]
    assert step["tool"] == "crm.sync"
    assert step["approval"]["state"] == "approved"
    assert step["approval"]["decisions"][0]["approver"] == "ayu"
    assert "synced 2 contact(s) and 1 deal(s)" in step["summary"]
    synced = _crm(stack, f"/synced?tenant={seed_tenant}")
    assert synced["applied"] == 1  # exactly once
    (sync,) = synced["syncs"]
    assert sync["idempotencyKey"] == f"{created['id']}:{step['id']}"
    assert (sync["contacts"], sync["deals"]) == (2, 1)
    contacts = _crm(stack, f"/contacts?tenant={seed_tenant}")
    assert sorted(c["email"] for c in contacts["contacts"]) == sorted(c["email"] for c in CONTACTS)
    assert _crm(stack, f"/pending?tenant={seed_tenant}") == {"contacts": [], "deals": []}


def test_plan_preview_names_the_approval_and_cost_without_creating_a_run(
    stack: Stack, seed_tenant: str, kubectl: Any
) -> None:
    headers = stack.auth(tenant=seed_tenant, roles=("member",))
    before = kubectl("get", "agentruns", "-n", f"tenant-{seed_tenant}", "-o", "name").stdout
    status, plan = stack.post(
        "/api/v1/plan",
        {"prompt": "Lanjutkan sinkronisasi CRM untuk kontak dan deal"},
        headers=headers,
    )
    assert status == 200, plan
    assert plan["planner"] == "builtin"
    (step,) = plan["steps"]
    assert step["tool"] == "crm.sync"
    assert step["requiresApproval"] is True
    assert step["approval"]["sideEffects"] is True
    assert step["scopes"] == ["write:crm"]
    assert plan["approvalsRequired"] == 1
    assert plan["costEstimate"] == step["costEstimate"] > 0
    status, question = stack.post(
        "/api/v1/plan", {"prompt": "What is our refund policy?"}, headers=headers
    )
    assert status == 200, question
    assert question["approvalsRequired"] == 0
    status, bad = stack.post(
        "/api/v1/plan",
        {"prompt": "x", "plan": [{"tool": "knowledge.search", "params": {}}]},
        headers=headers,
    )
    assert status == 400
    assert bad["error"]["code"] == "invalid_plan"
    assert "query" in bad["error"]["message"]
    status, other = stack.post("/api/v1/plan", {"tenant": "e2e", "prompt": "x"}, headers=headers)
    assert status == 403, other
    after = kubectl("get", "agentruns", "-n", f"tenant-{seed_tenant}", "-o", "name").stdout
    assert before == after  # previews create nothing
