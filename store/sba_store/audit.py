"""The append-only audit log (the database refuses UPDATE, DELETE and TRUNCATE)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sba_store.db import Pool, tenant_transaction
from sba_store.records import AuditRecord

_COLUMNS: Final = "id, tenant_id, actor, action, target, request_id, payload, created_at"


class AuditRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def append(
        self,
        *,
        tenant_id: str,
        actor: str,
        action: str,
        target: str,
        request_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> AuditRecord:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into audit_log (tenant_id, actor, action, target, request_id, payload)
                values ($1, $2, $3, $4, $5, $6)
                returning {_COLUMNS}
                """,
                tenant_id,
                actor,
                action,
                target,
                request_id,
                payload if payload is not None else {},
            )
        assert row is not None
        return AuditRecord(**dict(row))

    async def list_for_tenant(self, tenant_id: str, *, limit: int = 100) -> list[AuditRecord]:
        """The tenant's most recent entries, newest first."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select {_COLUMNS} from audit_log where tenant_id = $1
                order by created_at desc, id desc limit $2
                """,
                tenant_id,
                limit,
            )
        return [AuditRecord(**dict(row)) for row in rows]

    async def list_page(
        self,
        tenant_id: str,
        *,
        limit: int,
        before_id: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditRecord]:
        """One page of the tenant's entries, newest first, filtered.

        `before_id` is a keyset cursor (the id of the previous page's last entry):
        ids grow with time, so "newest first" is "highest id first".
        """
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select {_COLUMNS} from audit_log
                where tenant_id = $1
                  and ($2::bigint is null or id < $2)
                  and ($3::text is null or action = $3)
                  and ($4::text is null or actor = $4)
                  and ($5::timestamptz is null or created_at >= $5)
                  and ($6::timestamptz is null or created_at < $6)
                order by id desc
                limit $7
                """,
                tenant_id,
                before_id,
                action,
                actor,
                since,
                until,
                limit,
            )
        return [AuditRecord(**dict(row)) for row in rows]
