"""Artifacts: files produced by tool steps, stored with their sha256."""

from __future__ import annotations

import hashlib
from typing import Final
from uuid import UUID

from sba_store.db import Pool, tenant_transaction
from sba_store.records import ArtifactRecord

_COLUMNS: Final = (
    "id, tenant_id, run_id, step_id, title, content_type, size_bytes, sha256, created_at"
)


class ArtifactRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def put(
        self,
        *,
        tenant_id: str,
        run_id: UUID,
        step_id: str | None,
        title: str,
        content_type: str,
        content: bytes,
    ) -> ArtifactRecord:
        """Store an artifact; size and sha256 are computed here, not trusted from callers."""
        digest = hashlib.sha256(content).hexdigest()
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""
                insert into artifacts (tenant_id, run_id, step_id, title, content_type,
                                       content, size_bytes, sha256)
                values ($1, $2, $3, $4, $5, $6, $7, $8)
                returning {_COLUMNS}
                """,
                tenant_id,
                run_id,
                step_id,
                title,
                content_type,
                content,
                len(content),
                digest,
            )
        assert row is not None
        return ArtifactRecord(**dict(row))

    async def get(
        self, artifact_id: UUID, *, tenant_id: str
    ) -> tuple[ArtifactRecord, bytes] | None:
        """The artifact and its content, only if it belongs to `tenant_id`."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS}, content from artifacts where id = $1 and tenant_id = $2",
                artifact_id,
                tenant_id,
            )
        if row is None:
            return None
        fields = dict(row)
        content: bytes = fields.pop("content")
        return ArtifactRecord(**fields), content

    async def list_for_run(self, run_id: UUID, *, tenant_id: str) -> list[ArtifactRecord]:
        """The run's artifacts (metadata only), oldest first."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""
                select {_COLUMNS} from artifacts
                where run_id = $1 and tenant_id = $2
                order by created_at, id
                """,
                run_id,
                tenant_id,
            )
        return [ArtifactRecord(**dict(row)) for row in rows]
