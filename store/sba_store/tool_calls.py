"""Tool calls: one row per step attempt, with idempotent result recording."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

import asyncpg

from sba_store.db import Connection, Pool, tenant_transaction
from sba_store.records import ToolCallRecord

_COLUMNS: Final = (
    "id, tenant_id, run_id, step_id, attempt, tool, tool_version, params, result, error,"
    " success, started_at, finished_at, duration_ms"
)


class ToolCallRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record_start(
        self,
        *,
        run_id: UUID,
        step_id: str,
        attempt: int,
        tool: str,
        tool_version: str,
        tenant_id: str,
        params: dict[str, Any],
    ) -> ToolCallRecord:
        """Note that an attempt started; a repeat returns the existing row unchanged."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into tool_calls (tenant_id, run_id, step_id, attempt, tool,
                                        tool_version, params)
                values ($1, $2, $3, $4, $5, $6, $7)
                on conflict (run_id, step_id, attempt) do nothing
                returning {_COLUMNS}
                """,
                tenant_id,
                run_id,
                step_id,
                attempt,
                tool,
                tool_version,
                params,
            )
            if row is None:
                row = await self._fetch(conn, run_id, step_id, attempt, tenant_id)
        assert row is not None
        return ToolCallRecord(**dict(row))

    async def record_result(
        self,
        *,
        run_id: UUID,
        step_id: str,
        attempt: int,
        tool: str,
        tool_version: str,
        tenant_id: str,
        params: dict[str, Any],
        result: Any | None,
        success: bool,
        error: str | None,
        duration_ms: int | None,
    ) -> ToolCallRecord:
        """Record an attempt's outcome; the first outcome wins.

        Works with or without a prior record_start. A second result for the same
        (run_id, step_id, attempt), e.g. a retried HTTP POST, changes nothing and
        returns the stored row, so the caller can compare and answer idempotently.
        """
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into tool_calls (tenant_id, run_id, step_id, attempt, tool, tool_version,
                                        params, result, error, success, finished_at, duration_ms)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11)
                on conflict (run_id, step_id, attempt) do update
                    set result = excluded.result,
                        error = excluded.error,
                        success = excluded.success,
                        finished_at = excluded.finished_at,
                        duration_ms = excluded.duration_ms
                    where tool_calls.success is null
                returning {_COLUMNS}
                """,
                tenant_id,
                run_id,
                step_id,
                attempt,
                tool,
                tool_version,
                params,
                result,
                error,
                success,
                duration_ms,
            )
            if row is None:  # already finished: keep the first outcome
                row = await self._fetch(conn, run_id, step_id, attempt, tenant_id)
        assert row is not None
        return ToolCallRecord(**dict(row))

    async def get(
        self, run_id: UUID, step_id: str, attempt: int, *, tenant_id: str
    ) -> ToolCallRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await self._fetch(conn, run_id, step_id, attempt, tenant_id)
        return None if row is None else ToolCallRecord(**dict(row))

    async def get_by_id(self, call_id: UUID, *, tenant_id: str) -> ToolCallRecord | None:
        """Look a call up by id (StepStatus.result_ref)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from tool_calls where id = $1 and tenant_id = $2",
                call_id,
                tenant_id,
            )
        return None if row is None else ToolCallRecord(**dict(row))

    async def latest_successful(self, run_id: UUID, *, tenant_id: str) -> dict[str, ToolCallRecord]:
        """For each step of the run, its highest successful attempt."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select distinct on (step_id) {_COLUMNS} from tool_calls
                where run_id = $1 and tenant_id = $2 and success
                order by step_id, attempt desc
                """,
                run_id,
                tenant_id,
            )
        return {row["step_id"]: ToolCallRecord(**dict(row)) for row in rows}

    async def latest_outcomes(self, run_id: UUID, *, tenant_id: str) -> dict[str, ToolCallRecord]:
        """For each step of the run, its latest attempt that has an outcome (either way)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select distinct on (step_id) {_COLUMNS} from tool_calls
                where run_id = $1 and tenant_id = $2 and success is not null
                order by step_id, attempt desc
                """,
                run_id,
                tenant_id,
            )
        return {row["step_id"]: ToolCallRecord(**dict(row)) for row in rows}

    @staticmethod
    async def _fetch(
        conn: Connection, run_id: UUID, step_id: str, attempt: int, tenant_id: str
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"""
            select {_COLUMNS} from tool_calls
            where run_id = $1 and step_id = $2 and attempt = $3 and tenant_id = $4
            """,
            run_id,
            step_id,
            attempt,
            tenant_id,
        )
