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
# Function words carry no topic; left in, they dominate short queries and make
# unrelated texts look alike. English and Indonesian (the seeds' languages).
_STOP_WORDS: Final = frozenset(
    (
        "a an and are as at be but by can do does for from has have how i if in into is it "
        "its me my no not of on or our so than that the their them then there these they "
        "this to us was we were what when where which who why will with you your "
        "ada adalah akan atau bagaimana dalam dan dari dengan di ini itu ke kami kita oleh "
        "pada saya untuk yang"
    ).split()
)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into fixed-length vectors."""

    @property
    def dimensions(self) -> int: ...

    @property
    def min_similarity(self) -> float:
        """Cosine similarity below which a chunk is not related to a query at all.

        Each embedder has its own scale (unrelated texts score ~0 with feature
        hashing, ~0.1-0.2 with neural models), so the floor belongs to it.
        """
        ...

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

    @property
    def min_similarity(self) -> float:
        # Measured on the example knowledge base: related texts score 0.2-0.3,
        # unrelated ones below 0.08 (stop words removed).
        return 0.1

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
    words = [word for word in normalise_words(text) if word not in _STOP_WORDS]
    counts: Counter[str] = Counter(f"u:{word}" for word in words)
    bigrams: Counter[str] = Counter(f"b:{a} {b}" for a, b in itertools.pairwise(words))
    features = {feature: 1.0 + math.log(count) for feature, count in counts.items()}
    features.update(
        (feature, _BIGRAM_WEIGHT * (1.0 + math.log(count))) for feature, count in bigrams.items()
    )
    return features
