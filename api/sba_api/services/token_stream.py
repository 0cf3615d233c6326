"""Streamed model text → `token` run events, batched at most every `interval` seconds.

The first piece goes out at once (first-token latency), later pieces are gathered
for up to `interval` and written as one event. Each event carries the character
`offset` of its text in the answer; its dedupe key names the offset, so a batch
written twice (a retried write) is stored once, and a resumed generation that
skips what was already written continues the same sequence of offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

Flush = Callable[[int, str], Awaitable[None]]
"""(offset, text) -> written."""


class TokenBatcher:
    def __init__(
        self,
        flush: Flush,
        *,
        interval: float,
        start_offset: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self._interval = interval
        self._clock = clock
        self.offset = start_offset
        """Characters written so far (what the next event's offset is)."""
        self._buffer: list[str] = []
        self._last_flush: float | None = None
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.events = 0

    async def add(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        if self._timer is not None:
            return
        now = self._clock()
        due = 0.0 if self._last_flush is None else self._last_flush + self._interval - now
        if due <= 0:
            await self._write()
        else:
            self._timer = asyncio.create_task(self._write_later(due))

    async def _write_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        await self._write()

    async def _write(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            offset = self.offset
            self._last_flush = self._clock()
            await self._flush(offset, text)
            self.offset = offset + len(text)
            self.events += 1

    async def close(self) -> None:
        """Write what is left (the stream ended)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self._write()

    async def abandon(self) -> None:
        """Drop the timer without writing (the request was cancelled)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
