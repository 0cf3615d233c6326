"""Run plans of record (an LLM's plan is not reproducible) and token usage per tenant and day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction

_COLUMNS: Final = (
    "run_id, tenant_id, planner, model, steps, notes, prompt_tokens, completion_tokens,"
    " tokens_used, created_at"
)


@dataclass(frozen=True, slots=True)
class RunPlanRecord:
    run_id: UUID
    tenant_id: str
    planner: str
    model: str | None
    steps: list[dict[str, Any]]
    """[{id, tool, params}], validated against the tool registry before it was stored."""
    notes: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_used: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredPlan:
    record: RunPlanRecord
    inserted: bool
    """False when the run already had a plan (it is returned unchanged; no tokens added)."""


class RunPlanRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def get(self, run_id: UUID, *, tenant_id: str) -> RunPlanRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from run_plans where run_id = $1 and tenant_id = $2",
                run_id,
                tenant_id,
            )
        return RunPlanRecord(**dict(row)) if row is not None else None

    async def store(self, plan: RunPlanRecord, *, day: date) -> StoredPlan:
        """Store the run's plan once; the insert that wrote it adds its tokens to `day`."""
        async with tenant_transaction(self._pool, plan.tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into run_plans (run_id, tenant_id, planner, model, steps, notes,
                                       prompt_tokens, completion_tokens, tokens_used)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                on conflict (run_id) do nothing
                returning {_COLUMNS}
                """,
                plan.run_id,
                plan.tenant_id,
                plan.planner,
                plan.model,
                plan.steps,
                plan.notes,
                plan.prompt_tokens,
                plan.completion_tokens,
                plan.tokens_used,
            )
            if row is None:
                row = await conn.fetchrow(
                    f"select {_COLUMNS} from run_plans where run_id = $1 and tenant_id = $2",
                    plan.run_id,
                    plan.tenant_id,
                )
                assert row is not None
                return StoredPlan(RunPlanRecord(**dict(row)), inserted=False)
            if plan.tokens_used > 0 or plan.model is not None:
                await conn.execute(
                    """
                    insert into token_usage_daily (tenant_id, day, tokens, llm_calls)
                    values ($1, $2, $3, 1)
                    on conflict (tenant_id, day) do update
                    set tokens = token_usage_daily.tokens + excluded.tokens,
                        llm_calls = token_usage_daily.llm_calls + 1,
                        updated_at = now()
                    """,
                    plan.tenant_id,
                    day,
                    plan.tokens_used,
                )
        return StoredPlan(RunPlanRecord(**dict(row)), inserted=True)


class TokenUsageRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def tokens_on(self, tenant_id: str, day: date) -> int:
        """Tokens the tenant used on `day` (a UTC date)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            value = await conn.fetchval(
                "select tokens from token_usage_daily where tenant_id = $1 and day = $2",
                tenant_id,
                day,
            )
        return int(value or 0)

    async def add(self, tenant_id: str, day: date, tokens: int) -> int:
        """Add tokens used outside a run plan; the day's new total."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            value = await conn.fetchval(
                """
                insert into token_usage_daily (tenant_id, day, tokens, llm_calls)
                values ($1, $2, $3, 1)
                on conflict (tenant_id, day) do update
                set tokens = token_usage_daily.tokens + excluded.tokens,
                    llm_calls = token_usage_daily.llm_calls + 1,
                    updated_at = now()
                returning tokens
                """,
                tenant_id,
                day,
                tokens,
            )
        return int(value or 0)
