"""Ingesting documents into, and searching, a tenant's knowledge base."""

from __future__ import annotations

from sba_api.errors import UpstreamError
from sba_api.schemas import KnowledgeDocumentCreated, KnowledgeDocumentIn
from sba_api.services._boundary import store_boundary
from sba_core.knowledge import EMBEDDING_DIMENSIONS, Embedder, chunk_text
from sba_core.tools.contracts import KnowledgeHit, KnowledgeSearchResult
from sba_store.knowledge import KnowledgeRepository


class KnowledgeService:
    def __init__(self, knowledge: KnowledgeRepository, embedder: Embedder) -> None:
        self._knowledge = knowledge
        self._embedder = embedder

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        vectors = await self._embedder.embed(texts)
        if len(vectors) != len(texts) or any(len(v) != EMBEDDING_DIMENSIONS for v in vectors):
            raise UpstreamError(
                f"the embedder returned {len(vectors)} vectors for {len(texts)} texts, or vectors "
                f"that are not {EMBEDDING_DIMENSIONS}-dimensional"
            )
        return vectors

    async def ingest(self, document: KnowledgeDocumentIn) -> KnowledgeDocumentCreated:
        chunks = chunk_text(document.content)
        if not chunks:  # only whitespace: still searchable by its title
            chunks = [document.title]
        vectors = await self._embed(chunks)
        with store_boundary("store the document"):
            document_id = await self._knowledge.add_document(
                tenant_id=document.tenant,
                title=document.title,
                source=document.source,
                content=document.content,
                metadata=document.metadata,
                chunks=list(zip(chunks, vectors, strict=True)),
            )
        return KnowledgeDocumentCreated(id=str(document_id), chunks=len(chunks))

    async def search(self, tenant: str, query: str, top_k: int) -> KnowledgeSearchResult:
        (vector,) = await self._embed([query])
        with store_boundary("search the knowledge base"):
            hits = await self._knowledge.search(
                tenant, query, vector, top_k, min_similarity=self._embedder.min_similarity
            )
        return KnowledgeSearchResult(
            query=query,
            hits=[
                KnowledgeHit(
                    document_id=str(hit.document_id),
                    chunk_id=str(hit.chunk_id),
                    title=hit.title,
                    snippet=hit.snippet,
                    score=hit.score,
                )
                for hit in hits
            ],
        )
