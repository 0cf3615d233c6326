"""Reciprocal Rank Fusion: merge several rankings of the same items into one.

RRF only looks at ranks, never at raw scores, so it can combine a cosine
distance ranking with a full-text ranking whose scores are not comparable.
Cormack, Clarke & Büttcher (2009); k=60 is the constant from the paper.
"""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = 60
) -> list[tuple[str, float]]:
    """Fuse rankings (best first) into (id, score) pairs, best first.

    score(id) = sum over rankings containing id of 1 / (k + rank), rank from 1.
    Ties are broken by first appearance (earlier ranking, then earlier rank) so
    the result is deterministic.
    """
    if k < 0:
        raise ValueError("k must be non-negative")
    scores: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for ranking in rankings:
        seen_here: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen_here:  # a duplicate within one ranking counts once
                continue
            seen_here.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            first_seen.setdefault(item, len(first_seen))
    return sorted(scores.items(), key=lambda pair: (-pair[1], first_seen[pair[0]]))
