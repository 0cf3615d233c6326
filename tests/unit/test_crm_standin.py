"""The CRM stand-in: crm.sync's wire contract, Idempotency-Key replay semantics, faults,
auth and the staged "pending" records the demo syncs from."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sba_devstack.crm_standin import CrmStandIn

TENANT = "acme"


def sync_body(key: str = "run-1:step-1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mode": "upsert",
        "tenant": TENANT,
        "runId": "run-1",
        "stepId": "step-1",
        "idempotencyKey": key,
        "contacts": [{"email": "Ada@Example.com", "name": "Ada", "company": "Engines"}],
        "deals": [{"name": "Engine order", "amount": 1200.5, "stage": "proposal"}],
    }
    return {**body, **changes}


@pytest.fixture
async def crm() -> AsyncIterator[CrmStandIn]:
    async with CrmStandIn("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post_sync(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    *,
    key: str | None = "run-1:step-1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], str | None]:
    sent = {"X-SBA-Tenant": body.get("tenant", TENANT), **(headers or {})}
    if key is not None:
        sent["Idempotency-Key"] = key
    # The tool sends compact JSON bytes; so do we.
    data = json.dumps(body, separators=(",", ":"))
    sent["Content-Type"] = "application/json"
    async with http.post(url, data=data, headers=sent) as resp:
        return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_first_sync_applies_and_answers_the_contract(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    status, answer, replayed = await post_sync(http, crm.url, sync_body())
    assert status == 200
    assert answer == {"remoteId": "sync-1", "synced": {"contacts": 1, "deals": 1}}
    assert replayed is None
    synced = await get(http, f"{crm.base_url}/synced")
    assert synced["applied"] == 1
    assert synced["replays"] == 0
    (record,) = synced["syncs"]
    assert record["idempotencyKey"] == "run-1:step-1"
    assert (record["tenant"], record["runId"], record["stepId"]) == (TENANT, "run-1", "step-1")
    assert (record["contacts"], record["deals"]) == (1, 1)
    (contact,) = (await get(http, f"{crm.base_url}/contacts?tenant={TENANT}"))["contacts"]
    assert contact["email"] == "Ada@Example.com"
    assert contact["company"] == "Engines"
    (deal,) = (await get(http, f"{crm.base_url}/deals?tenant={TENANT}"))["deals"]
    assert (deal["name"], deal["amount"], deal["stage"]) == ("Engine order", 1200.5, "proposal")


async def test_replay_returns_the_stored_answer_and_applies_nothing(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    _, first, _ = await post_sync(http, crm.url, sync_body())
    status, again, replayed = await post_sync(http, crm.url, sync_body())
    assert status == 200
    assert again == first
    assert replayed == "true"
    synced = await get(http, f"{crm.base_url}/synced")
    assert (synced["applied"], synced["replays"]) == (1, 1)
    assert len((await get(http, f"{crm.base_url}/contacts"))["contacts"]) == 1


async def test_same_key_with_another_body_is_422(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    await post_sync(http, crm.url, sync_body())
    changed = sync_body(deals=[{"name": "Engine order", "amount": 1.0, "stage": "won"}])
    status, answer, _ = await post_sync(http, crm.url, changed)
    assert status == 422
    assert answer["error"]["code"] == "idempotency_key_reused"
    assert answer["error"]["message"]
    (deal,) = (await get(http, f"{crm.base_url}/deals"))["deals"]
    assert deal["stage"] == "proposal"
    assert (await get(http, f"{crm.base_url}/synced"))["applied"] == 1


async def test_missing_key_is_400_and_applies_nothing(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await post_sync(http, crm.url, sync_body(), key=None)
    assert status == 400
    assert answer["error"]["code"] == "idempotency_key_missing"
    assert (await get(http, f"{crm.base_url}/synced"))["applied"] == 0


async def test_invalid_body_is_400_and_does_not_burn_the_key(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await post_sync(http, crm.url, sync_body(mode="replace"))
    assert status == 400
    assert answer["error"]["code"] == "invalid_request"
    bad_deal = sync_body(deals=[{"name": "x", "amount": -1, "stage": "open"}])
    assert (await post_sync(http, crm.url, bad_deal))[0] == 400
    mismatch = {"X-SBA-Tenant": "someone-else"}
    assert (await post_sync(http, crm.url, sync_body(), headers=mismatch))[0] == 400
    status, _, replayed = await post_sync(http, crm.url, sync_body())
    assert (status, replayed) == (200, None)


async def test_concurrent_duplicates_apply_once(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    # A slow write keeps the first request inside the critical section while the rest arrive.
    async with http.post(f"{crm.base_url}/_control/faults", json={"delaySeconds": 0.05}) as resp:
        assert resp.status == 200
    results = await asyncio.gather(*(post_sync(http, crm.url, sync_body()) for _ in range(5)))
    assert {status for status, _, _ in results} == {200}
    assert {answer["remoteId"] for _, answer, _ in results} == {"sync-1"}
    assert sorted(str(replayed) for _, _, replayed in results) == ["None"] + ["true"] * 4
    synced = await get(http, f"{crm.base_url}/synced")
    assert (synced["applied"], synced["replays"]) == (1, 4)


async def test_injected_faults_fail_before_applying(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    fault = {"failNext": 2, "status": 503}
    async with http.post(f"{crm.base_url}/_control/faults", json=fault) as resp:
        assert resp.status == 200
    for _ in range(2):
        status, answer, _ = await post_sync(http, crm.url, sync_body())
        assert status == 503
        assert answer["error"]["code"] == "injected_fault"
    assert (await get(http, f"{crm.base_url}/synced"))["applied"] == 0
    assert (await get(http, f"{crm.base_url}/contacts"))["contacts"] == []
    status, answer, replayed = await post_sync(http, crm.url, sync_body())
    assert (status, answer["remoteId"], replayed) == (200, "sync-1", None)


async def test_api_key_is_required_when_configured(http: aiohttp.ClientSession) -> None:
    async with CrmStandIn(api_key="crm-secret") as crm:
        assert (await post_sync(http, crm.url, sync_body()))[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await post_sync(http, crm.url, sync_body(), headers=wrong))[0] == 401
        right = {"Authorization": "Bearer crm-secret"}
        assert (await post_sync(http, crm.url, sync_body(), headers=right))[0] == 200
        assert (await get(http, f"{crm.base_url}/synced"))["applied"] == 1


async def test_upsert_merges_by_lowercased_email_and_deal_name(
    crm: CrmStandIn, http: aiohttp.ClientSession
) -> None:
    await post_sync(http, crm.url, sync_body())
    later = sync_body(
        key="run-2:step-1",
        runId="run-2",
        contacts=[{"email": "ada@example.COM", "company": "Analytical"}],
        deals=[{"name": "Engine order", "amount": 1300, "stage": "won"}],
    )
    status, answer, _ = await post_sync(http, f"{crm.base_url}/api/sync", later, key="run-2:step-1")
    assert (status, answer["remoteId"]) == (200, "sync-2")
    (contact,) = (await get(http, f"{crm.base_url}/contacts?tenant={TENANT}"))["contacts"]
    assert (contact["name"], contact["company"]) == ("Ada", "Analytical")
    (deal,) = (await get(http, f"{crm.base_url}/deals"))["deals"]
    assert (deal["amount"], deal["stage"]) == (1300, "won")
    other = sync_body(key="k-other", tenant="globex", idempotencyKey="k-other")
    await post_sync(http, crm.url, other, key="k-other")
    assert len((await get(http, f"{crm.base_url}/contacts"))["contacts"]) == 2
    assert (await get(http, f"{crm.base_url}/synced?tenant=globex"))["applied"] == 1


async def test_pending_lists_staged_records_until_they_are_synced(
    http: aiohttp.ClientSession,
) -> None:
    seed = {
        TENANT: {
            "contacts": [{"email": "ada@example.com", "name": "Ada"}, {"email": "bob@example.com"}],
            "deals": [],
        }
    }
    async with CrmStandIn(seed=seed) as crm:
        pending = await get(http, f"{crm.base_url}/pending?tenant={TENANT}")
        assert [c["email"] for c in pending["contacts"]] == ["ada@example.com", "bob@example.com"]
        assert pending["deals"] == []
        deal = {"name": "Engine order", "amount": 10, "stage": "open"}
        stage = {"tenant": TENANT, "deals": [deal]}
        async with http.post(f"{crm.base_url}/_control/stage", json=stage) as resp:
            assert resp.status == 200
        only_contacts = await get(http, f"{crm.base_url}/pending?tenant={TENANT}&scope=contacts")
        assert (len(only_contacts["contacts"]), only_contacts["deals"]) == (2, [])
        body = sync_body(contacts=[{"email": "ADA@example.com"}], deals=[deal])
        assert (await post_sync(http, crm.url, body))[0] == 200
        after = await get(http, f"{crm.base_url}/pending?tenant={TENANT}")
        assert [c["email"] for c in after["contacts"]] == ["bob@example.com"]
        assert after["deals"] == []
        assert (await get(http, f"{crm.base_url}/pending?tenant=globex"))["contacts"] == []
        async with http.get(f"{crm.base_url}/pending") as resp:
            assert resp.status == 400
        async with http.get(f"{crm.base_url}/pending?tenant={TENANT}&scope=tickets") as resp:
            assert resp.status == 400
        async with http.post(f"{crm.base_url}/_control/reset") as resp:
            assert resp.status == 200
        restored = await get(http, f"{crm.base_url}/pending?tenant={TENANT}")
        assert len(restored["contacts"]) == 2
        assert (await get(http, f"{crm.base_url}/synced"))["applied"] == 0
