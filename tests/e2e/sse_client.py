"""A small, strict SSE client for tests: parses `id:`/`event:`/`data:` framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


async def iter_events(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent | str]:
    """Yields SseEvent for messages and the comment text (str) for comments/heartbeats."""
    event_id: str | None = None
    event: str | None = None
    data: list[str] = []
    while True:
        raw = await resp.content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n").rstrip("\r")
        if line == "":
            if data:
                yield SseEvent(event_id, event, "\n".join(data))
            event_id, event, data = None, None, []
            continue
        if line.startswith(":"):
            yield line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)


TERMINAL = {"completed", "failed", "cancelled"}


async def collect(
    session: aiohttp.ClientSession,
    url: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
) -> tuple[int, list[SseEvent]]:
    """Read events until a terminal one (or `stop_after` events); returns (status, events)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[SseEvent] = []
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            return resp.status, events
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        async for item in iter_events(resp):
            if isinstance(item, str):
                continue
            events.append(item)
            if item.event in TERMINAL or (stop_after is not None and len(events) >= stop_after):
                break
        return resp.status, events
