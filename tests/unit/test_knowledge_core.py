"""The pure knowledge core: chunking, the hashing embedder and rank fusion."""

from __future__ import annotations

import itertools
import math

import pytest

from sba_core.knowledge import (
    EMBEDDING_DIMENSIONS,
    Embedder,
    HashingEmbedder,
    chunk_text,
    reciprocal_rank_fusion,
)

PARAGRAPH = (
    "Kubernetes schedules pods onto nodes. Each pod runs one or more containers. "
    "The scheduler weighs resource requests, affinity rules and taints. "
)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# -- chunking -------------------------------------------------------------------


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("Hello world.\n\nSecond paragraph.") == ["Hello world.\n\nSecond paragraph."]


def test_empty_text_has_no_chunks() -> None:
    assert chunk_text("") == []
    assert chunk_text("  \n\n  ") == []


def test_chunks_are_bounded_and_cover_the_text() -> None:
    text = "\n\n".join(PARAGRAPH * (i % 4 + 1) for i in range(30))
    chunks = chunk_text(text, max_chars=800, overlap=100)
    assert len(chunks) > 5
    assert all(0 < len(chunk) <= 800 for chunk in chunks)
    # Every sentence of the source appears in some chunk.
    for sentence in ("Kubernetes schedules pods onto nodes.", "affinity rules and taints."):
        assert any(sentence in chunk for chunk in chunks)


def test_chunks_overlap() -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(200))
    chunks = chunk_text(text, max_chars=300, overlap=60)
    for previous, current in itertools.pairwise(chunks):
        # The next chunk starts with words from the end of the previous one.
        first_words = " ".join(current.split(" ")[:3])
        assert first_words in previous[-80:]


def test_over_long_words_are_cut() -> None:
    chunks = chunk_text("x" * 2000, max_chars=500, overlap=0)
    assert all(len(chunk) <= 500 for chunk in chunks)
    assert "".join(chunks) == "x" * 2000


def test_chunking_is_deterministic() -> None:
    text = "\n\n".join(PARAGRAPH * 5 for _ in range(10))
    assert chunk_text(text) == chunk_text(text)


@pytest.mark.parametrize(("max_chars", "overlap"), [(10, 0), (100, 60), (100, -1)])
def test_chunking_rejects_bad_bounds(max_chars: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        chunk_text("text", max_chars=max_chars, overlap=overlap)


# -- embedding ------------------------------------------------------------------


async def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    embedder = HashingEmbedder()
    assert isinstance(embedder, Embedder)
    assert embedder.dimensions == EMBEDDING_DIMENSIONS
    first, second = await embedder.embed(["The quick brown fox", "The quick brown fox"])
    assert first == second
    assert len(first) == EMBEDDING_DIMENSIONS
    assert math.isclose(math.sqrt(sum(v * v for v in first)), 1.0, rel_tol=1e-9)
    # The same text embeds the same way in a fresh instance (no per-process salt).
    assert HashingEmbedder().embed_one("The quick brown fox") == first


def test_normalisation_ignores_case_and_punctuation() -> None:
    embedder = HashingEmbedder()
    assert embedder.embed_one("Reset the PASSWORD!") == embedder.embed_one("reset the password")


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    embedder = HashingEmbedder()
    query = embedder.embed_one("how do I reset my account password")
    related = embedder.embed_one("To reset your account password, open settings and choose reset")
    unrelated = embedder.embed_one("Bananas are rich in potassium and grow in tropical climates")
    assert _cosine(query, related) > _cosine(query, unrelated) + 0.2


def test_text_without_words_is_the_zero_vector() -> None:
    assert not any(HashingEmbedder(dimensions=16).embed_one("  ... !!! "))


# -- fusion ---------------------------------------------------------------------


def test_rrf_rewards_items_found_by_both_rankings() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "d", "a"]], k=60)
    ids = [item for item, _ in fused]
    assert ids[:2] == ["a", "c"]
    assert set(ids) == {"a", "b", "c", "d"}
    scores = dict(fused)
    assert math.isclose(scores["a"], 1 / 61 + 1 / 63)
    assert math.isclose(scores["d"], 1 / 62)


def test_rrf_breaks_ties_by_first_appearance_and_ignores_duplicates() -> None:
    fused = reciprocal_rank_fusion([["x", "x", "y"], ["y", "x"]], k=0)
    # x: 1/1 + 1/2, y: 1/2 + 1/1 (the duplicate x counts once) -> tie, x seen first.
    assert [item for item, _ in fused] == ["x", "y"]
    assert reciprocal_rank_fusion([]) == []
