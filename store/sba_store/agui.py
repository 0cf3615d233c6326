"""AG-UI threads: (tenant, threadId, AG-UI runId) -> one segment of one of our runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction

_COLUMNS: Final = "tenant_id, thread_id, agui_run_id, run_id, segment, created_at"


@dataclass(frozen=True, slots=True)
class AguiRunRecord:
    tenant_id: str
    thread_id: str
    agui_run_id: str
    run_id: UUID
    segment: int
    """0: the AG-UI run that started our run; k: the one resuming after its k-th interrupt."""
    created_at: datetime


class AguiRunRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str, thread_id: str, agui_run_id: str) -> AguiRunRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from agui_runs"
                " where tenant_id = $1 and thread_id = $2 and agui_run_id = $3",
                tenant_id,
                thread_id,
                agui_run_id,
            )
        return AguiRunRecord(**dict(row)) if row is not None else None

    async def add(
        self, tenant_id: str, thread_id: str, agui_run_id: str, run_id: UUID, segment: int
    ) -> AguiRunRecord:
        """Record the mapping; when (thread, runId) or (run, segment) is taken, the row
        already there wins and is returned (a retried or concurrent request)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into agui_runs (tenant_id, thread_id, agui_run_id, run_id, segment)
                values ($1, $2, $3, $4, $5)
                on conflict do nothing
                returning {_COLUMNS}
                """,
                tenant_id,
                thread_id,
                agui_run_id,
                run_id,
                segment,
            )
            if row is None:
                row = await conn.fetchrow(
                    f"select {_COLUMNS} from agui_runs where tenant_id = $1 and"
                    " ((thread_id = $2 and agui_run_id = $3) or (run_id = $4 and segment = $5))"
                    " order by (thread_id = $2 and agui_run_id = $3) desc limit 1",
                    tenant_id,
                    thread_id,
                    agui_run_id,
                    run_id,
                    segment,
                )
        assert row is not None
        return AguiRunRecord(**dict(row))

    async def for_run(self, run_id: UUID, *, tenant_id: str) -> list[AguiRunRecord]:
        """The run's AG-UI runs by segment (empty: not started through AG-UI)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"select {_COLUMNS} from agui_runs where tenant_id = $1 and run_id = $2"
                " order by segment",
                tenant_id,
                run_id,
            )
        return [AguiRunRecord(**dict(r)) for r in rows]

    async def latest_in_thread(self, tenant_id: str, thread_id: str) -> AguiRunRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from agui_runs where tenant_id = $1 and thread_id = $2"
                " order by created_at desc, segment desc limit 1",
                tenant_id,
                thread_id,
            )
        return AguiRunRecord(**dict(row)) if row is not None else None
