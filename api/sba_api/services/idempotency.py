"""Idempotency keys for the POST routes that change things (`Idempotency-Key`).

The first request with a key claims it in Postgres (per tenant) and stores its
response when done; a replay with the same fingerprint — method, path, caller
and canonical JSON body — gets that response again. The same key with another
fingerprint is 409 `idempotency_key_reused`. A duplicate that arrives while the
first request is still in flight *waits* for its answer (polling, up to
`wait_seconds`) and then replays it, or gets 409 `idempotency_request_in_progress`
with Retry-After when the first is still not done.

What is stored: every answer the route gave after it started working — success
and refusals such as 404/409 — except 400 (the request was not acceptable, so
nothing was attempted) and 5xx (worth retrying): those release the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from sba_api.errors import Conflict
from sba_api.services._boundary import store_boundary
from sba_api.settings import IdempotencySettings
from sba_store.idempotency import IdempotencyRecord, IdempotencyRepository

POLL_SECONDS: Final = 0.1
NOT_STORED: Final = frozenset({400, 413, 415})


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    code = "idempotency_request_in_progress"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"body": self.body, "headers": self.headers}


def fingerprint(method: str, path: str, user: str, body: bytes) -> str:
    """sha256 of what makes two requests "the same": JSON bodies compare canonically."""
    try:
        content: Any = json.loads(body) if body else None
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = "raw:" + hashlib.sha256(body).hexdigest()
    material = json.dumps([method.upper(), path, user, canonical], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


def should_store(status: int) -> bool:
    return status < 500 and status not in NOT_STORED


class IdempotencyService:
    def __init__(
        self,
        repo: IdempotencyRepository,
        settings: IdempotencySettings,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._repo = repo
        self._settings = settings
        self._poll = poll_seconds

    async def begin(
        self, *, tenant: str, key: str, method: str, path: str, request_hash: str
    ) -> StoredResponse | None:
        """None: the key is ours, run the request. Else the response to replay."""
        deadline = time.monotonic() + self._settings.wait_seconds
        while True:
            with store_boundary("claim the idempotency key"):
                claim = await self._repo.claim(
                    tenant_id=tenant,
                    key=key,
                    method=method,
                    path=path,
                    request_hash=request_hash,
                    ttl_seconds=self._settings.ttl_seconds,
                    in_flight_timeout_seconds=self._settings.in_flight_timeout_seconds,
                )
            if claim.claimed:
                return None
            record = claim.record
            if (record.method, record.path, record.request_hash) != (method, path, request_hash):
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was used for another request"
                    f" ({record.method} {record.path} with a different body or caller);"
                    " use a new key"
                )
            if not record.in_flight:
                return _stored(record)
            if time.monotonic() >= deadline:
                raise IdempotencyInProgress(
                    f"a request with Idempotency-Key {key!r} is still in progress; retry",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(self._poll)

    async def finish(
        self, *, tenant: str, key: str, request_hash: str, response: StoredResponse
    ) -> None:
        with store_boundary("store the idempotent response"):
            await self._repo.complete(
                tenant_id=tenant,
                key=key,
                request_hash=request_hash,
                status=response.status,
                response=response.as_json(),
            )

    async def abandon(self, *, tenant: str, key: str, request_hash: str) -> None:
        with store_boundary("release the idempotency key"):
            await self._repo.release(tenant_id=tenant, key=key, request_hash=request_hash)


def _stored(record: IdempotencyRecord) -> StoredResponse:
    assert record.status is not None
    raw = record.response or {}
    headers = raw.get("headers") or {}
    return StoredResponse(
        status=record.status,
        body=raw.get("body"),
        headers={str(k): str(v) for k, v in headers.items()},
    )
