"""Idempotency keys: the first response of a POST, stored per (tenant, key) for replays.

A key is *claimed* before the request runs (status null: in flight) and
*completed* with the response afterwards, or *released* when the request failed
in a way worth retrying. `claim` answers either "yours" or the row that is
already there; comparing fingerprints and waiting for in-flight rows is the
caller's business (sba_api.idempotency).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sba_store.db import Pool, tenant_transaction

_COLUMNS: Final = (
    "tenant_id, key, method, path, request_hash, status, response, created_at, expires_at"
)


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    tenant_id: str
    key: str
    method: str
    path: str
    request_hash: str
    status: int | None
    """None while the first request is in flight."""
    response: dict[str, Any] | None
    created_at: datetime
    expires_at: datetime

    @property
    def in_flight(self) -> bool:
        return self.status is None


@dataclass(frozen=True, slots=True)
class Claim:
    record: IdempotencyRecord
    claimed: bool
    """True: this caller holds the key and must complete or release it."""


class IdempotencyRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def claim(
        self,
        *,
        tenant_id: str,
        key: str,
        method: str,
        path: str,
        request_hash: str,
        ttl_seconds: float,
        in_flight_timeout_seconds: float,
    ) -> Claim:
        """Claim `key` for this request, or return the row holding it.

        An expired row is replaced. An in-flight row older than the in-flight timeout
        with the same fingerprint (its API process died mid-request) is taken over.
        """
        async with tenant_transaction(self._pool, tenant_id) as conn:
            # Sweep the tenant's expired keys as we go: cheap on the (tenant, expiry) index.
            await conn.execute(
                "delete from idempotency_keys where tenant_id = $1 and expires_at <= now()"
                " and key <> $2",
                tenant_id,
                key,
            )
            row = await conn.fetchrow(
                f"""
                insert into idempotency_keys (tenant_id, key, method, path, request_hash,
                                              expires_at)
                values ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
                on conflict (tenant_id, key) do update
                    set method = excluded.method,
                        path = excluded.path,
                        request_hash = excluded.request_hash,
                        status = null,
                        response = null,
                        created_at = now(),
                        expires_at = excluded.expires_at
                    where idempotency_keys.expires_at <= now()
                       or (idempotency_keys.status is null
                           and idempotency_keys.created_at
                               <= now() - make_interval(secs => $7)
                           and idempotency_keys.method = excluded.method
                           and idempotency_keys.path = excluded.path
                           and idempotency_keys.request_hash = excluded.request_hash)
                returning {_COLUMNS}
                """,
                tenant_id,
                key,
                method,
                path,
                request_hash,
                float(ttl_seconds),
                float(in_flight_timeout_seconds),
            )
            if row is not None:
                return Claim(IdempotencyRecord(**dict(row)), claimed=True)
            row = await conn.fetchrow(
                f"select {_COLUMNS} from idempotency_keys where tenant_id = $1 and key = $2",
                tenant_id,
                key,
            )
        assert row is not None  # the conflicting row; deletes only touch other keys
        return Claim(IdempotencyRecord(**dict(row)), claimed=False)

    async def get(self, *, tenant_id: str, key: str) -> IdempotencyRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from idempotency_keys where tenant_id = $1 and key = $2",
                tenant_id,
                key,
            )
        return None if row is None else IdempotencyRecord(**dict(row))

    async def complete(
        self,
        *,
        tenant_id: str,
        key: str,
        request_hash: str,
        status: int,
        response: dict[str, Any],
    ) -> bool:
        """Store the response of the claimed request; False when the claim was lost."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            done = await conn.fetchval(
                """
                update idempotency_keys set status = $4, response = $5
                where tenant_id = $1 and key = $2 and request_hash = $3 and status is null
                returning true
                """,
                tenant_id,
                key,
                request_hash,
                status,
                response,
            )
        return bool(done)

    async def release(self, *, tenant_id: str, key: str, request_hash: str) -> None:
        """Forget an in-flight claim (the request failed; a retry may run it again)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await conn.execute(
                "delete from idempotency_keys where tenant_id = $1 and key = $2"
                " and request_hash = $3 and status is null",
                tenant_id,
                key,
                request_hash,
            )
