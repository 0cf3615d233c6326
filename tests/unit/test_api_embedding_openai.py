"""The OpenAI-compatible embedder against a local stub of the /embeddings endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sba_api.embedding_openai import OpenAIEmbedder
from sba_api.errors import ServiceUnavailable, UpstreamError
from sba_core.knowledge import EMBEDDING_DIMENSIONS


class Stub:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_first: int = 0
        self.dimensions: int = EMBEDDING_DIMENSIONS
        self.reverse = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": {"message": "slow down"}}, status=429)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i)] * self.dimensions}
            for i, _ in enumerate(body["input"])
        ]
        if self.reverse:
            data.reverse()
        return web.json_response({"object": "list", "data": data, "model": body["model"]})


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, str]]:
    state = Stub()
    app = web.Application()
    app.router.add_post("/v1/embeddings", state.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield state, str(server.make_url("/v1"))
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def test_embeds_in_batches_in_order(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, url = stub
    state.reverse = True  # the provider may answer out of order; `index` decides
    embedder = OpenAIEmbedder(
        session, base_url=url, model="text-embedding-3-small", api_key="sk-test", batch_size=2
    )
    vectors = await embedder.embed(["a", "b", "c"])
    assert [v[0] for v in vectors] == [0.0, 1.0, 0.0]
    assert all(len(v) == EMBEDDING_DIMENSIONS for v in vectors)
    assert [r["input"] for r in state.requests] == [["a", "b"], ["c"]]
    assert state.requests[0]["model"] == "text-embedding-3-small"
    assert state.requests[0]["dimensions"] == EMBEDDING_DIMENSIONS
    assert state.headers[0]["Authorization"] == "Bearer sk-test"
    assert embedder.dimensions == EMBEDDING_DIMENSIONS


async def test_retries_rate_limits(stub: tuple[Stub, str], session: aiohttp.ClientSession) -> None:
    state, url = stub
    state.fail_first = 2
    embedder = OpenAIEmbedder(session, base_url=url, model="m", backoff_seconds=0.01)
    assert len(await embedder.embed(["x"])) == 1
    assert len(state.requests) == 3


async def test_gives_up_with_an_upstream_error(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, url = stub
    state.fail_first = 5
    embedder = OpenAIEmbedder(session, base_url=url, model="m", backoff_seconds=0.01)
    with pytest.raises(UpstreamError, match="429"):
        await embedder.embed(["x"])


async def test_refuses_vectors_of_the_wrong_size(
    stub: tuple[Stub, str], session: aiohttp.ClientSession
) -> None:
    state, url = stub
    state.dimensions = 1536
    embedder = OpenAIEmbedder(session, base_url=url, model="m")
    with pytest.raises(UpstreamError, match="dimensional"):
        await embedder.embed(["x"])


async def test_unreachable_provider(session: aiohttp.ClientSession) -> None:
    embedder = OpenAIEmbedder(
        session, base_url="http://127.0.0.1:9/v1", model="m", backoff_seconds=0.01
    )
    with pytest.raises(ServiceUnavailable):
        await embedder.embed(["x"])
