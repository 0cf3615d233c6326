"""The per-run event log: gapless sequence numbers and idempotent appends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction
from sba_store.records import NewEvent, RunEventRecord

_COLUMNS: Final = "run_id, seq, tenant_id, type, level, ts, payload, dedupe_key"
# Namespaces the per-run advisory lock so it cannot collide with other lock users.
_LOCK_SEED: Final = 0x5BA_E7E7


class EventRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def append(
        self, run_id: UUID, tenant_id: str, events: Sequence[NewEvent]
    ) -> list[RunEventRecord]:
        """Append events in one transaction; return only the newly inserted ones.

        Appends for the same run are serialised by a transaction-scoped advisory
        lock, so seq = last + 1, last + 2, ... with no gaps even under concurrent
        writers. Events whose dedupe_key is already stored (or repeated earlier in
        the batch) are skipped, which makes replaying a batch harmless.
        """
        if not events:
            return []
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await conn.execute(
                "select pg_advisory_xact_lock(hashtextextended($1::text, $2))",
                str(run_id),
                _LOCK_SEED,
            )
            keys = [event.dedupe_key for event in events if event.dedupe_key is not None]
            existing: set[str] = set()
            if keys:
                rows = await conn.fetch(
                    "select dedupe_key from run_events"
                    " where run_id = $1 and tenant_id = $2 and dedupe_key = any($3::text[])",
                    run_id,
                    tenant_id,
                    keys,
                )
                existing = {row["dedupe_key"] for row in rows}
            last = await conn.fetchval(
                "select coalesce(max(seq), 0) from run_events where run_id = $1 and tenant_id = $2",
                run_id,
                tenant_id,
            )
            seq: int = last
            inserted: list[RunEventRecord] = []
            for event in events:
                if event.dedupe_key is not None:
                    if event.dedupe_key in existing:
                        continue
                    existing.add(event.dedupe_key)
                seq += 1
                row = await conn.fetchrow(
                    f"""
                    insert into run_events
                        (run_id, seq, tenant_id, dedupe_key, type, level, payload)
                    values ($1, $2, $3, $4, $5, $6, $7)
                    returning {_COLUMNS}
                    """,
                    run_id,
                    seq,
                    tenant_id,
                    event.dedupe_key,
                    event.type,
                    event.level,
                    event.payload if event.payload is not None else {},
                )
                assert row is not None
                inserted.append(RunEventRecord(**dict(row)))
        return inserted

    async def list_after(
        self, run_id: UUID, after_seq: int = 0, limit: int = 500, *, tenant_id: str
    ) -> list[RunEventRecord]:
        """Events with seq > after_seq, in order (SSE replay from Last-Event-ID)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select {_COLUMNS} from run_events
                where run_id = $1 and seq > $2 and tenant_id = $3
                order by seq
                limit $4
                """,
                run_id,
                after_seq,
                tenant_id,
                limit,
            )
        return [RunEventRecord(**dict(row)) for row in rows]

    async def last_seq(self, run_id: UUID, *, tenant_id: str) -> int:
        """The highest seq of the run, 0 when it has no events."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            value = await conn.fetchval(
                "select coalesce(max(seq), 0) from run_events where run_id = $1 and tenant_id = $2",
                run_id,
                tenant_id,
            )
        return int(value)

    async def streamed_chars(
        self, run_id: UUID, step_id: str, attempt: int, *, tenant_id: str
    ) -> int:
        """How much of a step attempt's answer is already in `token` events (characters):
        a restarted generation skips that much, so no reader gets a token twice."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            value = await conn.fetchval(
                """
                select coalesce(max((payload->>'offset')::bigint + length(payload->>'text')), 0)
                from run_events
                where run_id = $1 and tenant_id = $2 and type = 'token'
                  and payload->>'stepId' = $3 and payload->>'attempt' = $4
                """,
                run_id,
                tenant_id,
                step_id,
                str(attempt),
            )
        return int(value or 0)
