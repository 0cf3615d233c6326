"""Tenants: one row per Tenant resource."""

from __future__ import annotations

from typing import Final

from sba_store.db import Connection, Pool, tenant_transaction
from sba_store.records import TenantRecord

_COLUMNS: Final = "id, display_name, plan, created_at, updated_at"


async def ensure_tenant(conn: Connection, tenant_id: str) -> None:
    """Create a placeholder tenant row if none exists.

    Runs and documents reference tenants; the operator may see an AgentRun
    before it reconciles the Tenant, so writers never fail on that ordering.
    The Tenant reconcile later fills in the real display name and plan.
    """
    await conn.execute(
        "insert into tenants (id, display_name) values ($1, $1) on conflict (id) do nothing",
        tenant_id,
    )


class TenantRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def upsert(self, id: str, display_name: str, plan: str = "free") -> TenantRecord:
        async with tenant_transaction(self._pool, id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into tenants (id, display_name, plan) values ($1, $2, $3)
                on conflict (id) do update
                    set display_name = excluded.display_name,
                        plan = excluded.plan,
                        updated_at = now()
                    where (tenants.display_name, tenants.plan)
                        is distinct from (excluded.display_name, excluded.plan)
                returning {_COLUMNS}
                """,
                id,
                display_name,
                plan,
            )
            if row is None:  # unchanged: the conditional update touched nothing
                row = await conn.fetchrow(f"select {_COLUMNS} from tenants where id = $1", id)
        assert row is not None
        return TenantRecord(**dict(row))

    async def get(self, id: str) -> TenantRecord | None:
        async with tenant_transaction(self._pool, id) as conn:
            row = await conn.fetchrow(f"select {_COLUMNS} from tenants where id = $1", id)
        return None if row is None else TenantRecord(**dict(row))
