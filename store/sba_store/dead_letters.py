"""Dead letters: steps that exhausted their retries, kept for inspection and manual replay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction

_COLUMNS: Final = "id, tenant_id, run_id, step_id, tool, attempts, last_error, params, created_at"


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    id: UUID
    tenant_id: str
    run_id: UUID
    step_id: str
    tool: str
    attempts: int
    last_error: str
    params: dict[str, Any]
    created_at: datetime


class DeadLetterRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record(
        self,
        *,
        tenant_id: str,
        run_id: UUID,
        step_id: str,
        tool: str,
        attempts: int,
        last_error: str,
        params: dict[str, Any],
    ) -> DeadLetterRecord:
        """Record the dead-lettered step; a repeat returns the first record unchanged."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into dead_letters (tenant_id, run_id, step_id, tool, attempts,
                                          last_error, params)
                values ($1, $2, $3, $4, $5, $6, $7)
                on conflict (run_id, step_id) do nothing
                returning {_COLUMNS}
                """,
                tenant_id,
                run_id,
                step_id,
                tool,
                attempts,
                last_error,
                params,
            )
            if row is None:
                row = await conn.fetchrow(
                    f"select {_COLUMNS} from dead_letters"
                    " where run_id = $1 and step_id = $2 and tenant_id = $3",
                    run_id,
                    step_id,
                    tenant_id,
                )
        assert row is not None
        return DeadLetterRecord(**dict(row))

    async def list_for_run(self, run_id: UUID, *, tenant_id: str) -> list[DeadLetterRecord]:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"select {_COLUMNS} from dead_letters where run_id = $1 and tenant_id = $2"
                " order by created_at, step_id",
                run_id,
                tenant_id,
            )
        return [DeadLetterRecord(**dict(row)) for row in rows]
