"""An `Embedder` for OpenAI-compatible `/embeddings` endpoints, over aiohttp.

Asks for `EMBEDDING_DIMENSIONS`-dimensional vectors (the store's column size);
a provider that answers with another size is an error, not silently padded.
Retries 429 and 5xx answers a few times with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

import aiohttp

from sba_api.errors import ServiceUnavailable, UpstreamError
from sba_core.knowledge import EMBEDDING_DIMENSIONS

log = logging.getLogger(__name__)

_RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIEmbedder:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dimensions: int = EMBEDDING_DIMENSIONS,
        batch_size: int = 64,
        timeout_seconds: float = 30.0,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._api_key = api_key
        self._dimensions = dimensions
        self._batch_size = max(batch_size, 1)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_attempts = max(max_attempts, 1)
        self._backoff = backoff_seconds

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def min_similarity(self) -> float:
        # OpenAI-style embeddings put unrelated texts around 0.1-0.2.
        return 0.2

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors.extend(await self._embed_batch(list(texts[start : start + self._batch_size])))
        return vectors

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        payload = {
            "model": self._model,
            "input": texts,
            "dimensions": self._dimensions,
            "encoding_format": "float",
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with self._session.post(
                    self._url, json=payload, headers=headers, timeout=self._timeout
                ) as response:
                    if response.status in _RETRY_STATUSES and attempt < self._max_attempts:
                        log.warning("embeddings provider answered %s; retrying", response.status)
                        await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
                        continue
                    if response.status != 200:
                        text = (await response.text())[:300]
                        raise UpstreamError(
                            f"the embeddings provider answered {response.status}: {text}"
                        )
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt < self._max_attempts:
                    await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
                    continue
                raise ServiceUnavailable(f"the embeddings provider is unreachable: {exc}") from exc
            except ValueError as exc:  # not JSON
                raise UpstreamError("the embeddings provider answered with invalid JSON") from exc
            return self._parse(body, len(texts))
        raise ServiceUnavailable("the embeddings provider kept failing")  # pragma: no cover

    def _parse(self, body: Any, expected: int) -> list[list[float]]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            raise UpstreamError(
                f"the embeddings provider returned {len(data) if isinstance(data, list) else 'no'}"
                f" vectors for {expected} texts"
            )
        ordered: list[list[float] | None] = [None] * expected
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise UpstreamError("the embeddings provider returned a malformed item")
            index = item.get("index", position)
            embedding = item.get("embedding")
            if (
                not isinstance(index, int)
                or not 0 <= index < expected
                or not isinstance(embedding, list)
                or len(embedding) != self._dimensions
                or not all(isinstance(x, int | float) for x in embedding)
            ):
                raise UpstreamError(
                    f"the embeddings provider returned a malformed or non-{self._dimensions}-"
                    "dimensional vector"
                )
            ordered[index] = [float(x) for x in embedding]
        if any(vector is None for vector in ordered):
            raise UpstreamError("the embeddings provider returned duplicate indexes")
        return [vector for vector in ordered if vector is not None]
