"""AG-UI 1.0 over SSE: GET /api/v1/runs/{id}/agui and POST /api/v1/agui.

Both stream `data: <one AG-UI event JSON>` frames with `id: <seq>.<n>` (see
sba_core.agui) and `retry:`, so a client that lost the connection reconnects to
GET /runs/{id}/agui with Last-Event-ID and gets exactly the events it missed.
The run's events are replayed from seq 1 and folded through the encoder without
being sent up to the client's position: the encoder is deterministic, so the
events after the position are the ones it would have been sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from uuid import UUID

from aiohttp import web

from sba_api.errors import ServiceUnavailable, TooManyRequests
from sba_api.handlers._common import principal, read_json, services, settings
from sba_api.handlers.events import HEARTBEAT_FRAME, SSE_HEADERS, STREAM_RETRY_SECONDS
from sba_api.keys import LIMITS, METRICS
from sba_api.openapi import IDEMPOTENCY_HEADER
from sba_api.schemas_agui import AguiRunInput
from sba_api.services.agui import AguiService
from sba_api.services.events import EventFeed, Heartbeat
from sba_core import sse
from sba_core.agui import AguiEncoder, AguiFrame, Position, parse_event_id

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[dict[int, str]]]


def _agui(request: web.Request) -> AguiService:
    service = services(request).agui
    if service is None:
        raise ServiceUnavailable("AG-UI is not available in this API process")
    return service


def _position(request: web.Request) -> Position:
    header = request.headers.get("Last-Event-ID")
    return parse_event_id(header if header is not None else request.query.get("lastEventId"))


@asynccontextmanager
async def _slot(request: web.Request) -> AsyncIterator[None]:
    """One of the tenant's stream slots for as long as the stream is open (429 when none)."""
    limits = request.app.get(LIMITS)
    if limits is None:
        yield
        return
    who = principal(request)
    async with limits.stream_slot(who.tenant, who.user) as granted:
        if not granted:
            raise TooManyRequests(
                "the tenant has too many open event streams; retry later",
                code="too_many_streams",
                headers={"Retry-After": str(STREAM_RETRY_SECONDS)},
            )
        yield


async def stream_run(request: web.Request) -> web.StreamResponse:
    """GET /runs/{id}/agui: the whole run as AG-UI events, from Last-Event-ID on."""
    who = principal(request)
    agui = _agui(request)
    run_id = await services(request).runs.authorize(who, request.match_info["run_id"])
    record = await services(request).runs.record(run_id)
    thread, names = await agui.names(run_id, record.tenant_id)
    encoder = AguiEncoder(str(run_id), thread, names)
    after = _position(request)

    async def refresh() -> dict[int, str]:
        return (await agui.names(run_id, record.tenant_id))[1]

    async with _slot(request):
        return await _serve(
            request,
            run_id,
            record.tenant_id,
            encoder,
            refresh,
            after=after,
            segment=0,
            one_segment=False,
        )


async def run_agent(request: web.Request) -> web.StreamResponse:
    """POST /agui: start (or find, or resume) the run a RunAgentInput means; stream it."""
    who = principal(request)
    agui = _agui(request)
    body = await read_json(request, AguiRunInput)
    async with _slot(request):
        start = await agui.start(who, body, idempotency_key=request.headers.get(IDEMPOTENCY_HEADER))
        thread, names = await agui.names(start.run_id, start.tenant)
        encoder = AguiEncoder(str(start.run_id), thread, names)

        async def refresh() -> dict[int, str]:
            return (await agui.names(start.run_id, start.tenant))[1]

        return await _serve(
            request,
            start.run_id,
            start.tenant,
            encoder,
            refresh,
            after=_position(request),
            segment=start.segment,
            one_segment=True,
        )


def _frame(item: AguiFrame) -> bytes:
    return sse.frame(json.dumps(item.event, separators=(",", ":")), event_id=item.id)


async def _serve(
    request: web.Request,
    run_id: UUID,
    tenant: str,
    encoder: AguiEncoder,
    refresh: Refresh,
    *,
    after: Position,
    segment: int,
    one_segment: bool,
) -> web.StreamResponse:
    """Stream the run's AG-UI events after `after` from segment `segment` on.

    `one_segment`: stop after the first segment end sent (POST: one AG-UI run).
    Otherwise stop after the run's terminal event; a GET whose position is already
    past everything of a finished run gets 204 (stop reconnecting), as /events does.
    """
    config = settings(request).sse
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    gauge = request.app[METRICS].sse_streams
    prepared = False

    async def ensure_prepared() -> None:
        nonlocal prepared
        if not prepared:
            prepared = True
            gauge.inc()
            await response.prepare(request)
            await response.write(sse.retry(config.retry_ms))

    if one_segment:
        await ensure_prepared()
    try:
        # From seq 0: the encoder folds the whole run (see above); the feed serves what the
        # process's tail of the run holds from memory and reads only the rest.
        async with services(request).events.follow(run_id, tenant, 0) as feed:
            if request.transport is not None:
                feed.on_stall = request.transport.abort
            done = await _pump(
                feed, encoder, refresh, after, segment, one_segment, response, ensure_prepared
            )
        if not prepared and done:
            return web.Response(status=204)
        await ensure_prepared()
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.info("AG-UI client of run %s went away", run_id)
    except Exception:
        if not prepared:
            raise
        # Headers are sent; an error body is impossible. Log and cut the stream.
        log.exception("AG-UI stream of run %s failed", run_id)
        if request.transport is not None:
            request.transport.close()
    finally:
        if prepared:
            gauge.dec()
    return response


async def _pump(
    feed: EventFeed,
    encoder: AguiEncoder,
    refresh: Refresh,
    after: Position,
    segment: int,
    one_segment: bool,
    response: web.StreamResponse,
    ensure_prepared: Callable[[], Awaitable[None]],
) -> bool:
    """Write frames until the stream's end; True when the run's events ran out (terminal)."""
    async for item in feed:
        if isinstance(item, Heartbeat):
            await ensure_prepared()
            await feed.send(response.write, HEARTBEAT_FRAME)
            continue
        for event in item:
            if encoder.interrupted:
                # A new segment starts with this event: its runId may have just been named.
                encoder.run_ids.update(await refresh())
            for frame in encoder.encode(event.seq, event.type, event.payload, event.ts):
                if frame.segment < segment or not after.before(frame.seq, frame.index):
                    continue
                await ensure_prepared()
                # A client too slow to take it within the write timeout is cut (and resumes).
                await feed.send(response.write, _frame(frame))
                if one_segment and frame.ends_segment:
                    return False
    return True
