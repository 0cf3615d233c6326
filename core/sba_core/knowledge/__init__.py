"""Pure knowledge-base logic: chunking, offline embeddings and rank fusion.

The store runs the SQL; everything here is deterministic and free of I/O so it
can be unit-tested and shared by the API, the store and benchmarks.
"""

from sba_core.knowledge.chunking import chunk_text
from sba_core.knowledge.embedding import EMBEDDING_DIMENSIONS, Embedder, HashingEmbedder
from sba_core.knowledge.fusion import reciprocal_rank_fusion

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "Embedder",
    "HashingEmbedder",
    "chunk_text",
    "reciprocal_rank_fusion",
]
