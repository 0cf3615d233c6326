"""The event hub against real Postgres and Redis: one read per announcement per process."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from sba_api.handlers.events import _stream
from sba_api.keys import METRICS
from sba_api.metrics import Metrics
from sba_api.services.event_hub import EventHub, Heartbeat, HubConfig
from sba_store import eventbus
from sba_store.db import Pool
from sba_store.eventbus import RunEventListener
from sba_store.events import EventRepository
from sba_store.records import NewEvent, RunEventRecord
from sba_store.runs import RunRepository

pytestmark = pytest.mark.integration

TENANT = "hub"


class CountingEvents(EventRepository):
    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.reads = 0

    async def list_after(
        self, run_id: uuid.UUID, after_seq: int = 0, limit: int = 500, *, tenant_id: str
    ) -> list[RunEventRecord]:
        self.reads += 1
        return await super().list_after(run_id, after_seq, limit, tenant_id=tenant_id)


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    conn = Redis.from_url(redis_url)
    yield conn
    await conn.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def listener(redis_url: str) -> AsyncIterator[RunEventListener]:
    conn = Redis.from_url(redis_url)
    bus = RunEventListener(conn)
    await bus.start()
    yield bus
    await bus.stop()
    await conn.aclose()


async def _run(pool: Pool) -> uuid.UUID:
    run_id = uuid.uuid4()
    await RunRepository(pool).upsert(
        run_id=run_id,
        tenant_id=TENANT,
        namespace=f"tenant-{TENANT}",
        name=f"run-{run_id.hex[:8]}",
        prompt="p",
        spec={},
    )
    return run_id


async def _append(
    pool: Pool, redis: Redis, run_id: uuid.UUID, *types: str, announce: bool = True
) -> int:
    records = await EventRepository(pool).append(
        run_id,
        TENANT,
        [NewEvent(type=t, payload={"t": t}, dedupe_key=uuid.uuid4().hex) for t in types],
    )
    if announce:
        await eventbus.announce(redis, str(run_id), records[-1].seq)
    return records[-1].seq


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.005)


async def test_many_streams_share_one_read_per_announcement_and_survive_a_redis_reconnect(
    pg_pool: Pool, redis: Redis, listener: RunEventListener
) -> None:
    run_id = await _run(pg_pool)
    await _append(pg_pool, redis, run_id, "pending", "planning")
    events = CountingEvents(pg_pool)
    # A long heartbeat: whatever arrives here arrives through Redis (or its reconnect).
    config = HubConfig(
        heartbeat_seconds=60,
        batch_size=100,
        tail_events=64,
        tail_bytes=1 << 20,
        write_timeout_seconds=5,
    )
    hub = EventHub(events, listener, config)
    got: list[list[int]] = [[] for _ in range(300)]

    async def follow(i: int, after: int) -> None:
        async with hub.subscribe(run_id, TENANT, after) as sub:
            async for item in sub:
                if not isinstance(item, Heartbeat):
                    got[i].extend(event.seq for event in item)

    tasks = [asyncio.create_task(follow(i, i % 3)) for i in range(len(got))]
    await _until(lambda: all(seqs[-1:] == [2] or (i % 3 == 2) for i, seqs in enumerate(got)))
    assert events.reads == 1  # the priming read served every stream's replay

    await _append(pg_pool, redis, run_id, "executing")
    await _until(lambda: all(seqs[-1:] == [3] for seqs in got))
    assert events.reads == 2

    # An announcement lost (as while the listener is disconnected), then the listener's
    # connection dropped: its reconnect makes the tail read again, before any heartbeat.
    await _append(pg_pool, redis, run_id, "step_started", announce=False)
    await asyncio.sleep(0.2)
    assert all(seqs[-1:] == [3] for seqs in got)
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await _until(lambda: all(seqs[-1:] == [4] for seqs in got), within=15)

    await _append(pg_pool, redis, run_id, "completed")
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for i, seqs in enumerate(got):
        assert seqs == list(range(i % 3 + 1, 6))
    assert hub.tail(run_id) is None
    await hub.close()


async def test_a_stream_resuming_from_far_behind_reads_its_replay_then_joins(
    pg_pool: Pool, redis: Redis, listener: RunEventListener
) -> None:
    run_id = await _run(pg_pool)
    await _append(pg_pool, redis, run_id, *["token"] * 120)
    config = HubConfig(
        heartbeat_seconds=0.3,
        batch_size=50,
        tail_events=10,
        tail_bytes=1 << 20,
        write_timeout_seconds=5,
    )
    hub = EventHub(CountingEvents(pg_pool), listener, config)
    seqs: list[int] = []
    beats = 0

    async def follow() -> None:
        nonlocal beats
        async with hub.subscribe(run_id, TENANT, 5) as sub:
            async for item in sub:
                if isinstance(item, Heartbeat):
                    beats += 1
                else:
                    seqs.extend(event.seq for event in item)

    task = asyncio.create_task(follow())
    await _until(lambda: seqs[-1:] == [120])
    await _append(pg_pool, redis, run_id, "token", announce=False)  # found by the heartbeat
    await _until(lambda: seqs[-1:] == [121])
    await _until(lambda: beats >= 1)
    await _append(pg_pool, redis, run_id, "failed")
    await asyncio.wait_for(task, 10)
    assert seqs == list(range(6, 123))
    async with hub.subscribe(run_id, TENANT, 122) as sub:
        assert sub.finished  # the handler's 204
    await hub.close()


async def test_a_client_that_stops_reading_is_cut_and_the_others_never_wait(
    pg_pool: Pool, redis: Redis, listener: RunEventListener
) -> None:
    """The real SSE writer (pushes, then the stream's own task) over real sockets."""
    run_id = await _run(pg_pool)
    await _append(pg_pool, redis, run_id, "pending")
    config = HubConfig(
        heartbeat_seconds=30,
        batch_size=20,
        tail_events=50,
        tail_bytes=1 << 20,
        write_timeout_seconds=0.5,
    )
    hub = EventHub(EventRepository(pg_pool), listener, config)

    async def events(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        # Small kernel buffers, so a client that stops reading is found out within KiBs.
        request.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        after = int(request.headers.get("Last-Event-ID", "0"))
        async with hub.subscribe(run_id, TENANT, after) as feed:
            return await _stream(request, feed, 1000)

    app = web.Application()
    app[METRICS] = Metrics()
    app.router.add_get("/events", events)
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        url = str(server.make_url("/events"))
        # A client that sends its request and never reads: small buffers fill fast.
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((server.host, server.port))
        stuck.sendall(f"GET /events HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
        readers = [await http.get(url) for _ in range(20)]
        await _until(lambda: len(hub.tail(run_id).subscribers) == 21)  # type: ignore[union-attr]

        big = "x" * 8000
        started = asyncio.get_running_loop().time()
        for _ in range(6):
            records = await EventRepository(pg_pool).append(
                run_id,
                TENANT,
                [NewEvent(type="token", payload={"text": big}, dedupe_key=None) for _ in range(10)],
            )
            await eventbus.announce(redis, str(run_id), records[-1].seq)
        last = records[-1].seq

        async def read_through(resp: aiohttp.ClientResponse) -> None:
            async for line in resp.content:
                if line == f"id: {last}\n".encode():
                    return

        await asyncio.wait_for(asyncio.gather(*(read_through(r) for r in readers)), 10)
        # The readers were never held up by the stuck one (cut only after 0.5-0.625 s).
        assert asyncio.get_running_loop().time() - started < 5
        await _until(lambda: len(hub.tail(run_id).subscribers) == 20, within=5)  # type: ignore[union-attr]

        # Cut: what it got is whole frames up to some id; resuming from there loses nothing.
        stuck.setblocking(False)
        received = b""
        for _ in range(200):
            try:
                chunk = stuck.recv(1 << 16)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            if not chunk:
                break
            received += chunk
        stuck.close()
        ids = [int(m) for m in re.findall(rb"\nid: (\d+)\n", b"\n" + received)]
        got = ids[:-1]  # the last frame may be incomplete
        assert got == list(range(1, len(got) + 1))
        assert len(got) < last  # it was cut before the end
        resumed = await http.get(url, headers={"Last-Event-ID": str(got[-1] if got else 0)})
        seen: list[int] = []
        async for line in resumed.content:
            if line.startswith(b"id: "):
                seen.append(int(line[4:]))
                if seen[-1] == last:
                    break
        assert seen == list(range((got[-1] if got else 0) + 1, last + 1))
        for resp in [*readers, resumed]:
            resp.close()
    await hub.close()
