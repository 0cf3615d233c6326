"""Text embeddings: the `Embedder` protocol and an offline hashing embedder.

`HashingEmbedder` needs no model or network: it hashes word unigrams and
bigrams into a fixed number of signed buckets (the "hashing trick"). It is a
lexical embedding, so texts sharing words and phrases land close together,
which is what the offline default, the tests and the benchmarks need.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

# The knowledge_chunks.embedding column is vector(256); every embedder used
# with the store must produce this many dimensions.
EMBEDDING_DIMENSIONS: Final = 256

_WORD: Final = re.compile(r"\w+")
_BIGRAM_WEIGHT: Final = 0.5


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into fixed-length vectors."""

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class HashingEmbedder:
    """Deterministic feature-hashing embedder (word unigrams + bigrams, L2-normalised)."""

    def __init__(self, dimensions: int = EMBEDDING_DIMENSIONS) -> None:
        if dimensions < 8:
            raise ValueError("dimensions must be at least 8")
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]

    def embed_one(self, text: str) -> list[float]:
        """Embed one text synchronously; a text without words gives the zero vector."""
        vector = [0.0] * self._dimensions
        for feature, weight in _features(text).items():
            index, sign = self._bucket(feature)
            vector[index] += sign * weight
        norm = math.sqrt(sum(value * value for value in vector))
        if norm == 0.0:
            return vector
        return [value / norm for value in vector]

    def _bucket(self, feature: str) -> tuple[int, float]:
        # blake2b rather than hash(): Python's str hash is salted per process.
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        # The top bit picks the sign so collisions tend to cancel instead of pile up.
        sign = -1.0 if value >> 63 else 1.0
        return value % self._dimensions, sign


def normalise_words(text: str) -> list[str]:
    """Lower-cased, Unicode-normalised word tokens."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _features(text: str) -> dict[str, float]:
    """Sub-linearly weighted unigram and bigram features."""
    words = normalise_words(text)
    counts: Counter[str] = Counter(f"u:{word}" for word in words)
    bigrams: Counter[str] = Counter(f"b:{a} {b}" for a, b in itertools.pairwise(words))
    features = {feature: 1.0 + math.log(count) for feature, count in counts.items()}
    features.update(
        (feature, _BIGRAM_WEIGHT * (1.0 + math.log(count))) for feature, count in bigrams.items()
    )
    return features
