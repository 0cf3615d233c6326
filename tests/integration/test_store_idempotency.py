"""The idempotency-key repository against Postgres (as sba_app, so RLS applies)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest

from sba_store.db import Pool
from sba_store.idempotency import Claim, IdempotencyRepository

pytestmark = pytest.mark.integration


def _claim(
    repo: IdempotencyRepository, tenant: str, key: str, digest: str = "h1", **kw: float
) -> Coroutine[Any, Any, Claim]:
    return repo.claim(
        tenant_id=tenant,
        key=key,
        method="POST",
        path="/api/v1/runs",
        request_hash=digest,
        ttl_seconds=kw.get("ttl", 3600.0),
        in_flight_timeout_seconds=kw.get("timeout", 60.0),
    )


async def test_claim_complete_and_replay(pg_pool: Pool) -> None:
    repo = IdempotencyRepository(pg_pool)
    tenant, key = f"idem-{uuid.uuid4().hex[:6]}", "k-1"
    first = await _claim(repo, tenant, key)
    assert first.claimed
    assert first.record.in_flight
    second = await _claim(repo, tenant, key)
    assert not second.claimed
    assert second.record.in_flight
    body = {"body": {"id": "r1"}, "headers": {"Location": "/x"}}
    assert await repo.complete(
        tenant_id=tenant, key=key, request_hash="h1", status=201, response=body
    )
    # A second completion (a lost claim) changes nothing.
    assert not await repo.complete(
        tenant_id=tenant, key=key, request_hash="h1", status=500, response={}
    )
    replay = await _claim(repo, tenant, key, "other")
    assert not replay.claimed
    assert (replay.record.status, replay.record.response) == (201, body)
    assert replay.record.request_hash == "h1"
    # Keys are per tenant.
    assert (await _claim(repo, f"{tenant}-b", key)).claimed


async def test_concurrent_claims_have_one_winner(pg_pool: Pool) -> None:
    repo = IdempotencyRepository(pg_pool)
    tenant = f"idem-{uuid.uuid4().hex[:6]}"
    claims = await asyncio.gather(*(_claim(repo, tenant, "race") for _ in range(6)))
    assert sum(c.claimed for c in claims) == 1


async def test_expired_and_abandoned_keys_can_be_claimed_again(pg_pool: Pool) -> None:
    repo = IdempotencyRepository(pg_pool)
    tenant = f"idem-{uuid.uuid4().hex[:6]}"
    assert (await _claim(repo, tenant, "short", ttl=0.001)).claimed
    await asyncio.sleep(0.05)
    assert (await _claim(repo, tenant, "short", "new-body")).claimed  # expired: replaced
    # An in-flight claim whose owner died is taken over after the timeout, same body only.
    assert (await _claim(repo, tenant, "stale")).claimed
    await asyncio.sleep(0.05)
    assert not (await _claim(repo, tenant, "stale", "different", timeout=0.01)).claimed
    assert (await _claim(repo, tenant, "stale", timeout=0.01)).claimed
    # Released claims are gone.
    await repo.release(tenant_id=tenant, key="stale", request_hash="h1")
    assert await repo.get(tenant_id=tenant, key="stale") is None
