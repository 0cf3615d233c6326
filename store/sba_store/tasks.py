"""Tasks: the tenant's task store, written once per creating step (idempotency key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction
from sba_store.tenants import ensure_tenant

_COLUMNS: Final = (
    "id, tenant_id, run_id, step_id, idempotency_key, title, description, due_date,"
    " assignee, created_at"
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: UUID
    tenant_id: str
    run_id: UUID
    step_id: str
    idempotency_key: str
    title: str
    description: str | None
    due_date: date | None
    assignee: str | None
    created_at: datetime


class TaskRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        tenant_id: str,
        idempotency_key: str,
        run_id: UUID,
        step_id: str,
        title: str,
        description: str | None = None,
        due_date: date | None = None,
        assignee: str | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Create the task unless one with this key exists; (task, created).

        A replay with the same (tenant_id, idempotency_key) returns the stored task
        unchanged and created=False, whatever the other arguments say: the first
        write wins, so retries and concurrent attempts yield exactly one task.
        """
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await ensure_tenant(conn, tenant_id)
            row = await conn.fetchrow(
                f"""
                insert into tasks (tenant_id, idempotency_key, run_id, step_id, title,
                                   description, due_date, assignee)
                values ($1, $2, $3, $4, $5, $6, $7, $8)
                on conflict (tenant_id, idempotency_key) do nothing
                returning {_COLUMNS}
                """,
                tenant_id,
                idempotency_key,
                run_id,
                step_id,
                title,
                description,
                due_date,
                assignee,
            )
            created = row is not None
            if row is None:
                row = await conn.fetchrow(
                    f"select {_COLUMNS} from tasks where tenant_id = $1 and idempotency_key = $2",
                    tenant_id,
                    idempotency_key,
                )
        assert row is not None
        return TaskRecord(**dict(row)), created

    async def get(self, task_id: UUID, *, tenant_id: str) -> TaskRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from tasks where id = $1 and tenant_id = $2",
                task_id,
                tenant_id,
            )
        return None if row is None else TaskRecord(**dict(row))

    async def list_for_run(self, run_id: UUID, *, tenant_id: str) -> list[TaskRecord]:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"select {_COLUMNS} from tasks where run_id = $1 and tenant_id = $2"
                " order by created_at, id",
                run_id,
                tenant_id,
            )
        return [TaskRecord(**dict(row)) for row in rows]
