"""GET /api/v1/runs/{run_id}/events: the run's events as Server-Sent Events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from aiohttp import HttpVersion11, web

from sba_api.errors import TooManyRequests
from sba_api.handlers._common import principal, services, settings
from sba_api.keys import LIMITS, METRICS
from sba_api.services.events import EventFeed, Heartbeat, HubEvent, StreamBroken
from sba_core import sse

log = logging.getLogger(__name__)

STREAM_RETRY_SECONDS = 5
MAX_SEQ = 2**62
HEARTBEAT_FRAME: Final = sse.comment("heartbeat")
HEARTBEAT_CHUNK: Final = b"%x\r\n%s\r\n" % (len(HEARTBEAT_FRAME), HEARTBEAT_FRAME)
PUSH_BUFFER_LIMIT = 64 * 1024
"""A stream whose socket buffer holds more than this gets no pushes: its own task writes
(and waits, under the write timeout) until the client catches up."""

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}


def _resume_after(request: web.Request) -> int:
    header = request.headers.get("Last-Event-ID")
    value = header if header is not None else request.query.get("lastEventId")
    # Clamped to bigint: a client's absurd number means "after everything", not a 500.
    return min(sse.parse_last_event_id(value), MAX_SEQ)


async def stream_events(request: web.Request) -> web.StreamResponse:
    config = settings(request).sse
    who = principal(request)
    events = services(request).events
    run_id, tenant = await events.authorize(who, request.match_info["run_id"])
    async with events.follow(run_id, tenant, _resume_after(request)) as feed:
        if feed.finished:
            # The client already has the terminal event: 204 stops EventSource reconnecting.
            return web.Response(status=204)
        limits = request.app.get(LIMITS)
        if limits is None:
            return await _stream(request, feed, config.retry_ms)
        async with limits.stream_slot(who.tenant, who.user) as granted:
            if not granted:
                raise TooManyRequests(
                    "the tenant has too many open event streams; retry later",
                    code="too_many_streams",
                    headers={"Retry-After": str(STREAM_RETRY_SECONDS)},
                )
            return await _stream(request, feed, config.retry_ms)


class _Pusher:
    """Writes the run's shared bytes straight to an idle stream's socket (see
    Subscription.pushed): no task wake-up, no copy, and never a wait."""

    __slots__ = ("_chunked", "_transport")

    def __init__(self, transport: asyncio.Transport, chunked: bool) -> None:
        self._transport = transport
        self._chunked = chunked

    def __call__(self, item: Sequence[HubEvent] | Heartbeat) -> bool:
        transport = self._transport
        if transport.is_closing() or transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT:
            return False
        chunked = self._chunked
        if isinstance(item, Heartbeat):
            transport.write(HEARTBEAT_CHUNK if chunked else HEARTBEAT_FRAME)
        elif len(item) == 1:
            transport.write(item[0].chunk if chunked else item[0].frame)
        else:
            transport.write(b"".join(e.chunk if chunked else e.frame for e in item))
        return True


def _data(item: Sequence[HubEvent] | Heartbeat) -> bytes | memoryview:
    if isinstance(item, Heartbeat):
        return HEARTBEAT_FRAME
    if len(item) == 1:
        return item[0].frame  # the bytes every stream of the run in this process sends
    return b"".join(event.frame for event in item)


async def _stream(request: web.Request, feed: EventFeed, retry_ms: int) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    # Chunked for sure (HTTP/1.1), so pushed bytes can be the shared pre-framed chunks.
    chunked = request.version >= HttpVersion11
    if chunked:
        response.enable_chunked_encoding()
    gauge = request.app[METRICS].sse_streams
    gauge.inc()
    transport = request.transport
    if transport is not None:
        feed.on_stall = transport.abort
    try:
        await response.prepare(request)
        # Through the response: it sends the headers, so pushes may follow.
        await feed.send(response.write, sse.retry(retry_ms))
        if isinstance(transport, asyncio.Transport) and not response.compression:
            feed.push = _Pusher(transport, chunked)
        async for item in feed:
            # The run's reader handed these to this task rather than push them (the client
            # is behind, or its socket is full): it never waits for this write; a client
            # too slow to take it within the write timeout is cut, and resumes.
            await feed.send(response.write, _data(item))
            del item  # an idle stream keeps nothing of what it sent
        await feed.send(response.write_eof, b"")
    except (ConnectionResetError, ConnectionError):
        log.info("SSE client of run %s went away", request.match_info["run_id"])
    except StreamBroken:
        # Logged once by the run's reader; the client reconnects and resumes.
        if request.transport is not None:
            request.transport.close()
    except Exception:
        # Headers are sent; an error body is impossible. Log and cut the stream.
        log.exception("SSE stream of run %s failed", request.match_info["run_id"])
        if request.transport is not None:
            request.transport.close()
    finally:
        gauge.dec()
    return response
