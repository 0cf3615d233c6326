"""A tenant's usage, summed from its runs and tool calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sba_store.db import Pool, tenant_transaction


@dataclass(frozen=True, slots=True)
class UsageRecord:
    tenant_id: str
    runs_by_phase: dict[str, int]
    tool_calls: int
    tool_calls_failed: int
    run_seconds: float
    """Wall time of finished runs (created to finished) in the period."""
    since: datetime | None


class UsageRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def for_tenant(self, tenant_id: str, *, since: datetime | None = None) -> UsageRecord:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            phases = await conn.fetch(
                """
                select phase, count(*) as n from runs
                where tenant_id = $1 and ($2::timestamptz is null or created_at >= $2)
                group by phase
                """,
                tenant_id,
                since,
            )
            seconds = await conn.fetchval(
                """
                select coalesce(sum(extract(epoch from finished_at - created_at)), 0)::float8
                from runs
                where tenant_id = $1 and finished_at is not null
                  and ($2::timestamptz is null or created_at >= $2)
                """,
                tenant_id,
                since,
            )
            calls = await conn.fetchrow(
                """
                select count(*) as total, count(*) filter (where success is false) as failed
                from tool_calls
                where tenant_id = $1 and ($2::timestamptz is null or started_at >= $2)
                """,
                tenant_id,
                since,
            )
        assert calls is not None
        return UsageRecord(
            tenant_id=tenant_id,
            runs_by_phase={str(row["phase"]): int(row["n"]) for row in phases},
            tool_calls=int(calls["total"]),
            tool_calls_failed=int(calls["failed"]),
            run_seconds=float(seconds or 0.0),
            since=since,
        )
