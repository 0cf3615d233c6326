"""Following a run's event log: replay from Postgres, then tail via the Redis listener.

Postgres is the only source of events; a Redis announcement (or the heartbeat
timeout) just means "read Postgres again after the last seq sent". So a missed
announcement delays an event by at most one heartbeat and never loses it, and
tracking the last sent seq means no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from sba_api.services._boundary import store_boundary
from sba_api.services.runs import RunNotFound, parse_run_id
from sba_core.events import TERMINAL_EVENTS, RunEvent
from sba_store.eventbus import RunEventListener
from sba_store.events import EventRepository
from sba_store.records import RunEventRecord
from sba_store.runs import RunRepository


@dataclass(frozen=True)
class Heartbeat:
    """Nothing new within the heartbeat interval."""


HEARTBEAT: Final = Heartbeat()


def to_wire(record: RunEventRecord) -> RunEvent:
    run_id = str(record.run_id)
    return RunEvent(
        event_id=RunEvent.make_id(run_id, record.seq),
        seq=record.seq,
        run_id=run_id,
        tenant_id=record.tenant_id,
        ts=record.ts,
        type=record.type,
        level=record.level,
        payload=record.payload,
    )


class EventFeed:
    """The events of one run after a given seq, in order, ending after a terminal event.

    Iterate to get batches (each at most `batch_size` events) or `HEARTBEAT`.
    The caller writes each batch before asking for the next, so at most one
    batch is ever held in memory however slow the client is.
    """

    def __init__(
        self,
        events: EventRepository,
        run_id: UUID,
        after_seq: int,
        wake: asyncio.Event,
        *,
        tenant_id: str,
        heartbeat_seconds: float,
        batch_size: int,
    ) -> None:
        self._events = events
        self._run_id = run_id
        self._tenant_id = tenant_id
        self._wake = wake
        self._heartbeat = heartbeat_seconds
        self._batch = batch_size
        self.last_seq = after_seq
        self.finished = False
        self._pending: list[RunEventRecord] = []

    async def _read(self) -> list[RunEventRecord]:
        with store_boundary("read run events"):
            return await self._events.list_after(
                self._run_id, self.last_seq, self._batch, tenant_id=self._tenant_id
            )

    async def prime(self) -> None:
        """First read; sets `finished` when the client already has the terminal event."""
        self._pending = await self._read()
        if self._pending or self.last_seq == 0:
            return
        with store_boundary("read run events"):
            last = await self._events.last_seq(self._run_id, tenant_id=self._tenant_id)
            if last == 0 or last > self.last_seq:
                return
            tail = await self._events.list_after(
                self._run_id, last - 1, 1, tenant_id=self._tenant_id
            )
        if tail and tail[0].type in TERMINAL_EVENTS:
            self.finished = True

    def _take(self, records: Sequence[RunEventRecord]) -> list[RunEvent]:
        out: list[RunEvent] = []
        for record in records:
            if record.seq <= self.last_seq:  # never a duplicate
                continue
            out.append(to_wire(record))
            self.last_seq = record.seq
            if record.type in TERMINAL_EVENTS:
                self.finished = True
                break
        return out

    async def __aiter__(self) -> AsyncIterator[list[RunEvent] | Heartbeat]:
        while not self.finished:
            if self._pending:
                batch, full = self._take(self._pending), len(self._pending) >= self._batch
                self._pending = []
                if batch:
                    yield batch
                if full or self.finished:
                    if not self.finished:
                        self._pending = await self._read()
                    continue
            # Clear before reading: an announcement arriving during or after the read
            # sets the event again, so the wait below cannot miss it.
            self._wake.clear()
            self._pending = await self._read()
            if self._pending:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._heartbeat)
            except TimeoutError:
                yield HEARTBEAT
            self._pending = await self._read()


class EventService:
    def __init__(
        self,
        runs: RunRepository,
        events: EventRepository,
        listener: RunEventListener,
        *,
        heartbeat_seconds: float,
        batch_size: int,
    ) -> None:
        self._runs = runs
        self._events = events
        self._listener = listener
        self._heartbeat = heartbeat_seconds
        self._batch = batch_size

    @asynccontextmanager
    async def follow(self, raw_run_id: str, after_seq: int) -> AsyncIterator[EventFeed]:
        """A primed feed of the run's events after `after_seq` (404 for unknown runs).

        The Redis watch starts before the first Postgres read, so an event
        committed between the two wakes the feed instead of falling in between.
        """
        run_id = parse_run_id(raw_run_id)
        with store_boundary("read the run"):
            # RLS: the row is read under its owner's tenant, learnt through run_owner().
            owner = await self._runs.owner(run_id)
            record = None if owner is None else await self._runs.get(run_id, tenant_id=owner)
        if record is None:
            raise RunNotFound(f"run {raw_run_id} not found")
        async with self._listener.watch(str(run_id)) as wake:
            feed = EventFeed(
                self._events,
                run_id,
                max(after_seq, 0),
                wake,
                tenant_id=record.tenant_id,
                heartbeat_seconds=self._heartbeat,
                batch_size=self._batch,
            )
            await feed.prime()
            yield feed
