"""One operator-wide wake-up scheduler for time-based run changes.

Backoffs ending, approvals expiring, step and run deadlines passing: each
reconcile returns `Decision.wake_at`, and this scheduler holds one heap of
(time, run) for all runs and reconciles each run when its time comes. There are
no per-run polling loops and no per-object timers; after an operator restart the
heap is rebuilt by the first reconcile of every run (Kopf lists them all at
startup), because wake times are computed from status timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

log = logging.getLogger(__name__)

Wake = Callable[[str, str, str], Awaitable[None]]
"""(namespace, name, uid) -> reconcile that run."""

MARGIN_SECONDS: Final = 0.2
"""Wake a little after the due time: decisions compare whole seconds."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Entry:
    at: datetime
    namespace: str
    name: str


class WakeScheduler:
    def __init__(self, wake: Wake, clock: Callable[[], datetime] = _utcnow) -> None:
        self._wake = wake
        self._clock = clock
        self._due: dict[str, _Entry] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def schedule(self, uid: str, namespace: str, name: str, at: datetime | None) -> None:
        """Wake `uid` at `at` (replacing an earlier plan); None forgets it."""
        if at is None:
            self.forget(uid)
            return
        current = self._due.get(uid)
        if current is not None and current.at == at:
            return
        self._due[uid] = _Entry(at, namespace, name)
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, uid))
        self._changed.set()

    def forget(self, uid: str) -> None:
        self._due.pop(uid, None)  # its heap entries are skipped lazily

    def due_at(self, uid: str) -> datetime | None:
        entry = self._due.get(uid)
        return entry.at if entry else None

    def __len__(self) -> int:
        return len(self._due)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="sba-wake-scheduler")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _pop_due(self, now: datetime) -> list[tuple[str, _Entry]]:
        ready: list[tuple[str, _Entry]] = []
        while self._heap:
            at, _, uid = self._heap[0]
            entry = self._due.get(uid)
            if entry is None or entry.at != at:
                heapq.heappop(self._heap)  # stale: replaced or forgotten
                continue
            if at > now:
                break
            heapq.heappop(self._heap)
            del self._due[uid]
            ready.append((uid, entry))
        return ready

    def _next_delay(self, now: datetime) -> float | None:
        while self._heap:
            at, _, uid = self._heap[0]
            entry = self._due.get(uid)
            if entry is None or entry.at != at:
                heapq.heappop(self._heap)
                continue
            return max((at - now).total_seconds(), 0.0) + MARGIN_SECONDS
        return None

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            delay = self._next_delay(self._clock())
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=delay)
            for uid, entry in self._pop_due(self._clock()):
                task = asyncio.create_task(self._fire(uid, entry), name=f"wake:{uid}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _fire(self, uid: str, entry: _Entry) -> None:
        try:
            await self._wake(entry.namespace, entry.name, uid)
        except Exception:  # the wake callback schedules its own retries
            log.exception("waking run %s/%s failed", entry.namespace, entry.name)
