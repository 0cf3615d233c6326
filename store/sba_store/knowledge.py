"""The knowledge base: documents, chunks and hybrid (vector + full-text) search."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final
from uuid import UUID

from sba_core.knowledge import EMBEDDING_DIMENSIONS, reciprocal_rank_fusion
from sba_store.db import Connection, Pool, tenant_transaction
from sba_store.records import KnowledgeDocumentRecord, KnowledgeHitRecord
from sba_store.tenants import ensure_tenant

SNIPPET_CHARS: Final = 280
# The usual Reciprocal Rank Fusion constant: damps the weight of the very top ranks.
RRF_K: Final = 60
_WORD: Final = re.compile(r"\w+")
# Quotes, "-term" and "or" are websearch syntax the user meant; leave those queries alone.
_WEBSEARCH_SYNTAX: Final = re.compile(r'"|(^|\s)-\w|\bor\b', re.IGNORECASE)
# pgvector 0.8 added iterative HNSW scans, which keep a filtered (per-tenant)
# search from coming back short; older versions reject the setting.
_ITERATIVE_SCAN_VERSION: Final = (0, 8)


class KnowledgeRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._iterative_scan: bool | None = None  # learnt on first search

    async def add_document(
        self,
        *,
        tenant_id: str,
        title: str,
        source: str | None,
        content: str,
        metadata: dict[str, Any] | None,
        chunks: Sequence[tuple[str, Sequence[float]]],
    ) -> UUID:
        """Store a document and its (text, embedding) chunks atomically; return its id."""
        for _, embedding in chunks:
            _check_dimensions(embedding)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await ensure_tenant(conn, tenant_id)
            document_id: UUID = await conn.fetchval(
                """
                insert into knowledge_documents (tenant_id, title, source, content, metadata)
                values ($1, $2, $3, $4, $5) returning id
                """,
                tenant_id,
                title,
                source,
                content,
                metadata if metadata is not None else {},
            )
            await conn.executemany(
                """
                insert into knowledge_chunks
                    (tenant_id, document_id, ord, title, content, embedding)
                values ($1, $2, $3, $4, $5, $6)
                """,
                [
                    (tenant_id, document_id, ord, title, text, list(embedding))
                    for ord, (text, embedding) in enumerate(chunks)
                ],
            )
        return document_id

    async def get_document(
        self, tenant_id: str, document_id: UUID
    ) -> KnowledgeDocumentRecord | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                "select id, tenant_id, title, source, metadata, created_at"
                " from knowledge_documents where id = $1 and tenant_id = $2",
                document_id,
                tenant_id,
            )
        return None if row is None else KnowledgeDocumentRecord(**dict(row))

    async def delete_document(self, tenant_id: str, document_id: UUID) -> bool:
        """Delete a document and (by cascade) its chunks; False when it did not exist."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            status = await conn.execute(
                "delete from knowledge_documents where id = $1 and tenant_id = $2",
                document_id,
                tenant_id,
            )
        return status.endswith(" 1")

    async def count_documents(self, tenant_id: str) -> int:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            value = await conn.fetchval(
                "select count(*) from knowledge_documents where tenant_id = $1", tenant_id
            )
        return int(value)

    async def search(
        self,
        tenant_id: str,
        query: str,
        query_embedding: Sequence[float],
        top_k: int = 5,
        candidates: int = 50,
        *,
        one_per_document: bool = True,
        min_similarity: float = -1.0,
    ) -> list[KnowledgeHitRecord]:
        """Hybrid retrieval within one tenant, fused by Reciprocal Rank Fusion.

        Two candidate lists of `candidates` chunks each: nearest by cosine
        distance (HNSW) and best by full-text rank (ts_rank_cd). RRF merges them
        by rank, so a chunk found by both comes first. With one_per_document
        only each document's best chunk is returned. Vector candidates less
        similar than `min_similarity` are not candidates at all. Scores are
        normalised to 0..1 (1: first in both lists).
        """
        _check_dimensions(query_embedding)
        if top_k < 1:
            return []
        candidates = max(candidates, top_k)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            vector_ids = await self._vector_candidates(
                conn, tenant_id, query_embedding, candidates, min_similarity
            )
            text_ids = await self._text_candidates(conn, tenant_id, query, candidates)
            rankings = [vector_ids, text_ids]
            fused = reciprocal_rank_fusion(rankings, k=RRF_K)
            rows = await conn.fetch(
                """
                select c.id, c.document_id, c.title, c.content, d.source
                from knowledge_chunks c join knowledge_documents d on d.id = c.document_id
                where c.tenant_id = $1 and d.tenant_id = $1 and c.id = any($2::uuid[])
                """,
                tenant_id,
                [UUID(chunk_id) for chunk_id, _ in fused],
            )
        by_id = {str(row["id"]): row for row in rows}
        vector_rank = {chunk_id: rank for rank, chunk_id in enumerate(vector_ids, start=1)}
        text_rank = {chunk_id: rank for rank, chunk_id in enumerate(text_ids, start=1)}
        hits: list[KnowledgeHitRecord] = []
        seen_documents: set[UUID] = set()
        for chunk_id, score in fused:
            row = by_id.get(chunk_id)
            if row is None:  # deleted between the queries
                continue
            if one_per_document:
                if row["document_id"] in seen_documents:
                    continue
                seen_documents.add(row["document_id"])
            hits.append(
                KnowledgeHitRecord(
                    document_id=row["document_id"],
                    chunk_id=row["id"],
                    title=row["title"],
                    snippet=_snippet(row["content"]),
                    score=round(score * (RRF_K + 1) / len(rankings), 4),
                    vector_rank=vector_rank.get(chunk_id),
                    text_rank=text_rank.get(chunk_id),
                    source=row["source"],
                )
            )
            if len(hits) == top_k:
                break
        return hits

    async def _vector_candidates(
        self,
        conn: Connection,
        tenant_id: str,
        embedding: Sequence[float],
        limit: int,
        min_similarity: float,
    ) -> list[str]:
        if not any(embedding):  # a zero vector has no cosine distance (NaN)
            return []
        if await self._supports_iterative_scan(conn):
            await conn.execute("select set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        await conn.execute(
            "select set_config('hnsw.ef_search', $1, true)", str(min(max(limit, 40), 1000))
        )
        # relaxed_order may return slightly out-of-order rows; the materialised
        # CTE lets the outer query re-sort by the exact distance.
        rows = await conn.fetch(
            """
            with nearest as materialized (
                select id, embedding <=> $2 as distance from knowledge_chunks
                where tenant_id = $1
                order by embedding <=> $2
                limit $3
            )
            select id from nearest where 1 - distance >= $4 order by distance, id
            """,
            tenant_id,
            list(embedding),
            limit,
            min_similarity,
        )
        return [str(row["id"]) for row in rows]

    async def _text_candidates(
        self, conn: Connection, tenant_id: str, query: str, limit: int
    ) -> list[str]:
        websearch = _any_terms(query)
        if not websearch:
            return []
        rows = await conn.fetch(
            """
            select c.id from knowledge_chunks c, websearch_to_tsquery('english', $2) q
            where c.tenant_id = $1 and c.tsv @@ q
            order by ts_rank_cd(c.tsv, q) desc, c.id
            limit $3
            """,
            tenant_id,
            websearch,
            limit,
        )
        return [str(row["id"]) for row in rows]

    async def _supports_iterative_scan(self, conn: Connection) -> bool:
        if self._iterative_scan is None:
            version = await conn.fetchval(
                "select extversion from pg_extension where extname = 'vector'"
            )
            parts = tuple(int(p) for p in re.findall(r"\d+", str(version or "0"))[:2])
            self._iterative_scan = parts >= _ITERATIVE_SCAN_VERSION
        return self._iterative_scan


def _any_terms(query: str) -> str:
    """A websearch query matching chunks with any of the words.

    websearch_to_tsquery ANDs plain words, which makes a natural-language
    question match almost nothing; OR-ing them lets ts_rank_cd rank by how
    many terms a chunk covers. Queries already using websearch syntax pass
    through unchanged.
    """
    if _WEBSEARCH_SYNTAX.search(query):
        return query
    return " or ".join(_WORD.findall(query))


def _snippet(content: str) -> str:
    if len(content) <= SNIPPET_CHARS:
        return content
    cut = content.rfind(" ", 0, SNIPPET_CHARS)
    return content[: cut if cut > 0 else SNIPPET_CHARS].rstrip() + "…"


def _check_dimensions(embedding: Sequence[float]) -> None:
    if len(embedding) != EMBEDDING_DIMENSIONS:
        raise ValueError(
            f"embedding has {len(embedding)} dimensions; the store needs {EMBEDDING_DIMENSIONS}"
        )
