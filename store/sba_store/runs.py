"""Runs: the durable record of each AgentRun, written by both the API and the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction, transaction
from sba_store.records import RunRecord
from sba_store.tenants import ensure_tenant

_COLUMNS: Final = (
    "id, tenant_id, namespace, name, prompt, user_id, phase, spec,"
    " created_at, updated_at, finished_at"
)


class RunRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def upsert(
        self,
        *,
        run_id: UUID,
        tenant_id: str,
        namespace: str,
        name: str,
        prompt: str,
        spec: dict[str, Any],
        user_id: str | None = None,
        phase: str | None = None,
        finished_at: datetime | None = None,
    ) -> RunRecord:
        """Insert the run, or update its phase (when given) and updated_at.

        phase=None on an existing run keeps the stored phase, so the API can
        record a run without racing the operator's later transitions. A new
        run without a phase starts as 'pending'.
        """
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await ensure_tenant(conn, tenant_id)
            row = await conn.fetchrow(
                f"""
                insert into runs (id, tenant_id, namespace, name, prompt, user_id,
                                  phase, spec, finished_at)
                values ($1, $2, $3, $4, $5, $6, coalesce($7, 'pending'), $8, $9)
                on conflict (id) do update
                    set phase = coalesce($7, runs.phase),
                        finished_at = coalesce($9, runs.finished_at),
                        updated_at = now()
                returning {_COLUMNS}
                """,
                run_id,
                tenant_id,
                namespace,
                name,
                prompt,
                user_id,
                phase,
                spec,
                finished_at,
            )
        assert row is not None
        return RunRecord(**dict(row))

    async def get(self, run_id: UUID, *, tenant_id: str) -> RunRecord | None:
        """The run, only if it belongs to `tenant_id` (None otherwise)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from runs where id = $1 and tenant_id = $2",
                run_id,
                tenant_id,
            )
        return None if row is None else RunRecord(**dict(row))

    async def owner(self, run_id: UUID) -> str | None:
        """The tenant owning the run, None when there is no such run.

        Goes through the run_owner() SECURITY DEFINER function, which reveals
        nothing but the tenant id, so a caller can answer "another tenant's run"
        (403) apart from "no such run" (404) without reading the row.
        """
        async with transaction(self._pool) as conn:
            owner: str | None = await conn.fetchval("select run_owner($1)", run_id)
        return owner

    async def get_by_name(self, namespace: str, name: str, *, tenant_id: str) -> RunRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from runs"
                " where namespace = $1 and name = $2 and tenant_id = $3"
                " order by created_at desc limit 1",
                namespace,
                name,
                tenant_id,
            )
        return None if row is None else RunRecord(**dict(row))

    async def set_phase(
        self,
        run_id: UUID,
        phase: str,
        finished_at: datetime | None = None,
        *,
        tenant_id: str,
    ) -> RunRecord | None:
        """Record a phase transition; None when the tenant has no such run."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                update runs
                    set phase = $2, finished_at = coalesce($3, finished_at), updated_at = now()
                    where id = $1 and tenant_id = $4
                returning {_COLUMNS}
                """,
                run_id,
                phase,
                finished_at,
                tenant_id,
            )
        return None if row is None else RunRecord(**dict(row))

    async def list_for_tenant(
        self,
        tenant_id: str,
        *,
        limit: int = 50,
        before: tuple[datetime, UUID] | None = None,
    ) -> list[RunRecord]:
        """The tenant's runs, newest first.

        `before` is a keyset cursor: the (created_at, id) of the last run of the
        previous page. Keyset (not OFFSET) keeps pages stable while runs arrive.
        """
        before_at, before_id = before if before is not None else (None, None)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select {_COLUMNS} from runs
                where tenant_id = $1
                  and ($2::timestamptz is null or (created_at, id) < ($2, $3::uuid))
                order by created_at desc, id desc
                limit $4
                """,
                tenant_id,
                before_at,
                before_id,
                limit,
            )
        return [RunRecord(**dict(row)) for row in rows]
