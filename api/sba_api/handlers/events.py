"""GET /api/v1/runs/{run_id}/events: the run's events as Server-Sent Events."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from sba_api.errors import TooManyRequests
from sba_api.handlers._common import principal, services, settings
from sba_api.keys import LIMITS, METRICS
from sba_api.services.events import EventFeed, Heartbeat
from sba_core import sse

log = logging.getLogger(__name__)

STREAM_RETRY_SECONDS = 5
MAX_SEQ = 2**62

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
    await services(request).runs.authorize(who, request.match_info["run_id"])
    async with services(request).events.follow(
        request.match_info["run_id"], _resume_after(request)
    ) as feed:
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


async def _stream(request: web.Request, feed: EventFeed, retry_ms: int) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    gauge = request.app[METRICS].sse_streams
    gauge.inc()
    try:
        await response.prepare(request)
        await response.write(sse.retry(retry_ms))
        async for item in feed:
            if isinstance(item, Heartbeat):
                await response.write(sse.comment("heartbeat"))
                continue
            for event in item:
                frame = sse.frame(
                    json.dumps(event.wire(), separators=(",", ":")),
                    event=event.type,
                    event_id=str(event.seq),
                )
                await response.write(frame)  # drains: a slow client slows this loop
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.info("SSE client of run %s went away", request.match_info["run_id"])
    except Exception:
        # Headers are sent; an error body is impossible. Log and cut the stream.
        log.exception("SSE stream of run %s failed", request.match_info["run_id"])
        if request.transport is not None:
            request.transport.close()
    finally:
        gauge.dec()
    return response
