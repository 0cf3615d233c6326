"""One Postgres reader per run per API process, shared by every local subscriber of it.

Postgres is the only source of events; a Redis announcement (or the heartbeat re-check)
only means "read again after the highest seq read". For each run with subscribers in
this process a `RunTail` does that read once per announcement and keeps the recent
events, contiguous in seq and bounded in count and bytes, for all of them.

A subscriber is a cursor: the last seq it was given. It takes what the tail holds after
its cursor; a cursor older than the tail's start reads Postgres itself (a replay, shared
by the subscribers at the same point) until it reaches the tail. Cursors only move
forward over contiguous seqs, so nobody sees a gap or a duplicate; the reader never
waits for a client (it appends and wakes), so a slow client costs only its cursor, and
one that falls off the tail pays its own Postgres reads, not the others' latency.
A subscriber that is caught up and idle is written to by the reader itself when its
socket can take the shared bytes at once (`Subscription.push`): one event fanned out to
thousands of streams costs a socket write each, not a task wake-up each. Otherwise its
own task writes; a write that does not finish within the write timeout cuts that
client's connection (it resumes with Last-Event-ID and loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar
from uuid import UUID

from sba_api.services._boundary import store_boundary
from sba_core import sse
from sba_core.events import TERMINAL_EVENTS, RunEvent
from sba_store.records import RunEventRecord

log = logging.getLogger(__name__)

_Data = TypeVar("_Data")


class EventLog(Protocol):
    """The reads the hub needs (sba_store.events.EventRepository)."""

    async def list_after(
        self, run_id: UUID, after_seq: int = 0, limit: int = 500, *, tenant_id: str
    ) -> list[RunEventRecord]: ...

    async def last_seq(self, run_id: UUID, *, tenant_id: str) -> int: ...


class Announcements(Protocol):
    """Wake-ups per run (sba_store.eventbus.RunEventListener)."""

    def watch(self, run_id: str) -> AbstractAsyncContextManager[asyncio.Event]: ...


@dataclass(frozen=True)
class Heartbeat:
    """Nothing new within the heartbeat interval."""


HEARTBEAT: Final = Heartbeat()

Push = Callable[[Sequence["HubEvent"] | Heartbeat], bool]
"""Write these events (or a heartbeat) to a client now, without waiting; False when its
connection cannot take them at once (the subscriber's own task then writes them)."""


class StreamBroken(RuntimeError):
    """The run's shared reader failed; its subscribers end (clients resume)."""


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


def encode_frame(record: RunEventRecord) -> bytes:
    """The SSE frame of /runs/{id}/events: `id: <seq>`, `event: <type>`, the event as JSON."""
    return sse.frame(
        json.dumps(to_wire(record).wire(), separators=(",", ":")),
        event=record.type,
        event_id=str(record.seq),
    )


class HubEvent:
    """One event as this process read it, shared by every subscriber it reaches.

    The SSE frame is encoded at most once per read, stored as the HTTP/1.1 chunk that
    carries it (`chunk`) so a push writes the shared bytes as they are; `frame` is a
    view of the frame inside. AG-UI encodes its own frames from `seq`, `type`,
    `payload` and `ts`.
    """

    __slots__ = ("_chunk", "_start", "record", "terminal")

    def __init__(self, record: RunEventRecord) -> None:
        self.record = record
        self.terminal = record.type in TERMINAL_EVENTS
        self._chunk: bytes | None = None
        self._start = 0

    @property
    def seq(self) -> int:
        return self.record.seq

    @property
    def type(self) -> str:
        return self.record.type

    @property
    def payload(self) -> dict[str, Any]:
        return self.record.payload

    @property
    def ts(self) -> datetime:
        return self.record.ts

    @property
    def chunk(self) -> bytes:
        """`<size in hex>\\r\\n<frame>\\r\\n`: the frame in a chunked response body."""
        if self._chunk is None:
            frame = encode_frame(self.record)
            head = b"%x\r\n" % len(frame)
            self._chunk, self._start = head + frame + b"\r\n", len(head)
        return self._chunk

    @property
    def frame(self) -> memoryview:
        chunk = self.chunk
        return memoryview(chunk)[self._start : len(chunk) - 2]


@dataclass(frozen=True)
class HubConfig:
    heartbeat_seconds: float
    batch_size: int
    tail_events: int
    tail_bytes: int
    write_timeout_seconds: float


class RunTail:
    """The shared reader and recent events of one run, while it has subscribers here.

    Invariant: the held events are exactly seqs `base_seq + 1 .. last_seq`.
    """

    def __init__(
        self,
        log_: EventLog,
        announcements: Announcements,
        config: HubConfig,
        run_id: UUID,
        tenant_id: str,
    ) -> None:
        self.run_id = run_id
        self.tenant_id = tenant_id
        self.config = config
        self.base_seq = 0
        self.last_seq = 0
        self.head_terminal = False
        """The event at `last_seq` ends the run."""
        self.beats = 0
        self.error: BaseException | None = None
        self.subscribers: set[Subscription] = set()
        self._log = log_
        self._announcements = announcements
        self._items: list[HubEvent] = []
        self._start = 0
        self._bytes = 0
        self._waiting: dict[Subscription, asyncio.Future[None]] = {}
        """Subscribers caught up and idle: the reader pushes to them or wakes them."""
        self._ready = asyncio.Event()
        self._replays: dict[int, asyncio.Task[list[HubEvent]]] = {}
        self._task = asyncio.create_task(self._read_loop(), name=f"event-tail-{run_id}")

    # -- for subscribers ------------------------------------------------------------

    async def wait(self, subscription: Subscription) -> None:
        """Until the reader wakes `subscription` (new events it could not push to it, a
        heartbeat, the end of the run, a failure). While it waits, the reader may push
        events to it and move its cursor."""
        # A bare future per waiter, not Event.wait(): an idle stream is one small object.
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[subscription] = waiter
        try:
            await waiter
        finally:
            if self._waiting.get(subscription) is waiter:
                del self._waiting[subscription]

    async def wait_ready(self) -> None:
        await self._ready.wait()
        if self.error is not None:
            raise self.error

    def after(self, seq: int, limit: int) -> list[HubEvent] | None:
        """Held events after `seq` (at most `limit`); None when they are no longer held."""
        if seq < self.base_seq:
            return None
        if seq >= self.last_seq:
            return []
        index = self._start + (seq - self.base_seq)
        return self._items[index : index + limit]

    async def replay(self, after: int) -> list[HubEvent]:
        """Events after `after` from Postgres, up to the tail's start.

        Subscribers at the same point share one read (a reconnect storm after a cut or a
        restart resumes from few distinct points).
        """
        task = self._replays.get(after)
        if task is None:
            limit = max(1, min(self.config.batch_size, self.base_seq - after))
            task = asyncio.create_task(self._read_replay(after, limit))
            self._replays[after] = task
            task.add_done_callback(lambda done: self._replay_done(after, done))
        # Shielded: one subscriber leaving must not cancel the read the others wait for.
        return await asyncio.shield(task)

    # -- the shared reader ----------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            # Watching before the first read: an event committed meanwhile wakes the loop.
            async with self._announcements.watch(str(self.run_id)) as wake:
                await self._prime()
                self._ready.set()
                while True:
                    woke = await _wait(wake, self.config.heartbeat_seconds)
                    # Cleared before reading: an announcement during the read sets it again.
                    wake.clear()
                    if not await self._read_new() and not woke:
                        self.beats += 1
                        self._deliver(HEARTBEAT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    async def _prime(self) -> None:
        """Start the tail at the run's head, holding its last events for new subscribers."""
        keep = self.config.tail_events
        with store_boundary("read run events"):
            head = await self._log.last_seq(self.run_id, tenant_id=self.tenant_id)
            start = max(0, head - keep)
            records = (
                await self._log.list_after(self.run_id, start, keep, tenant_id=self.tenant_id)
                if head > 0
                else []
            )
        self.base_seq = self.last_seq = start
        self._append(records)

    async def _read_new(self) -> bool:
        got = False
        batch = self.config.batch_size
        while True:
            with store_boundary("read run events"):
                records = await self._log.list_after(
                    self.run_id, self.last_seq, batch, tenant_id=self.tenant_id
                )
            if records:
                got = self._append(records) or got
            if len(records) < batch:
                return got

    def _append(self, records: Sequence[RunEventRecord]) -> bool:
        added: list[HubEvent] = []
        for record in records:
            if record.seq <= self.last_seq:
                continue
            if record.seq != self.last_seq + 1:
                # Seqs are gapless, so this is not expected; if it happens the tail restarts
                # here, so no cursor is ever served across the hole by index.
                self._items.clear()
                self._start = self._bytes = 0
                self.base_seq = record.seq - 1
                added.clear()
            event = HubEvent(record)
            self._items.append(event)
            self._bytes += len(event.chunk)
            self.last_seq = record.seq
            self.head_terminal = event.terminal
            added.append(event)
        if not added:
            return False
        self._trim()
        self._deliver(added)
        return True

    def _trim(self) -> None:
        items, config = self._items, self.config
        while len(items) - self._start > 1 and (
            len(items) - self._start > config.tail_events or self._bytes > config.tail_bytes
        ):
            self._bytes -= len(items[self._start].chunk)
            self._start += 1
            self.base_seq += 1
        if self._start > 64 and self._start * 2 > len(items):
            del items[: self._start]
            self._start = 0

    def _deliver(self, item: list[HubEvent] | Heartbeat | None) -> None:
        """Hand `item` to every idle subscriber: pushed when its connection takes it at
        once, else (or for None: a failure) the subscriber is woken to deal with it."""
        woken = []
        for subscription, waiter in self._waiting.items():
            if waiter.done():
                continue
            if item is not None and subscription.pushed(item):
                continue
            waiter.set_result(None)
            woken.append(subscription)
        for subscription in woken:
            del self._waiting[subscription]

    def _notify(self) -> None:
        self._deliver(None)

    def _fail(self, exc: Exception) -> None:
        log.warning("the event reader of run %s failed: %s", self.run_id, exc)
        self.error = exc
        self._ready.set()
        self._notify()

    async def _read_replay(self, after: int, limit: int) -> list[HubEvent]:
        with store_boundary("read run events"):
            records = await self._log.list_after(
                self.run_id, after, limit, tenant_id=self.tenant_id
            )
        return [HubEvent(record) for record in records]

    def _replay_done(self, after: int, task: asyncio.Task[list[HubEvent]]) -> None:
        if self._replays.get(after) is task:
            del self._replays[after]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have left already

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Subscription:
    """One subscriber's cursor into its run's tail.

    `async with` joins the run's tail (creating it for the first subscriber) and leaves
    it; iterate inside to get batches (each at most `batch_size` events) or `HEARTBEAT`,
    until a terminal event. A batch's events are shared objects: a subscriber's own
    memory is this object and the batch it is writing. No generator or context-manager
    frames: an idle stream should cost as little as possible.
    """

    __slots__ = (
        "_hub",
        "_run_id",
        "_stalled",
        "_tail",
        "_tenant_id",
        "finished",
        "last_seq",
        "on_stall",
        "push",
        "writing_since",
    )

    def __init__(self, hub: EventHub, run_id: UUID, tenant_id: str, after_seq: int) -> None:
        self._hub = hub
        self._run_id = run_id
        self._tenant_id = tenant_id
        self._tail: RunTail | None = None
        self.last_seq = max(after_seq, 0)
        self.finished = False
        """True from the start when the client already has the run's terminal event."""
        self.writing_since: float | None = None
        self.on_stall: Callable[[], None] | None = None
        """Called once when a write is stuck past the write timeout (abort the transport)."""
        self.push: Push | None = None
        """Set by a stream that can take events without waiting (see `pushed`)."""
        self._stalled = False

    @property
    def run_id(self) -> UUID:
        return self._run_id

    @property
    def tenant_id(self) -> str:
        return self._tenant_id

    async def __aenter__(self) -> Subscription:
        tail = self._hub._join(self)
        self._tail = tail
        try:
            await tail.wait_ready()
        except BaseException:
            self._hub._leave(self, tail)
            raise
        self.finished = tail.head_terminal and self.last_seq >= tail.last_seq
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._tail is not None:
            self._hub._leave(self, self._tail)

    async def send(self, write: Callable[[_Data], Awaitable[None]], data: _Data) -> None:
        """`await write(data)` under the write timeout (the hub's sweeper enforces it)."""
        self.writing_since = time.monotonic()
        try:
            await write(data)
        finally:
            self.writing_since = None

    def check_stall(self, now: float, timeout: float) -> bool:
        since = self.writing_since
        if since is None or self._stalled or now - since < timeout:
            return False
        self._stalled = True
        if self.on_stall is not None:
            self.on_stall()
        return True

    def pushed(self, item: list[HubEvent] | Heartbeat) -> bool:
        """Whether the reader wrote `item` to this idle subscriber itself.

        Waking every stream's task to write one event costs several times the write;
        when the connection can take the bytes at once the reader writes them (no
        await: a full connection is never waited for) and moves the cursor. False hands
        the item to the subscriber's task, as does the run's end (the task ends the
        stream).
        """
        push = self.push
        if push is None:
            return False
        if isinstance(item, Heartbeat):
            return _safely(push, item)
        if item[0].seq != self.last_seq + 1:
            return False
        end = next((i + 1 for i, event in enumerate(item) if event.terminal), len(item))
        batch = item if end == len(item) else item[:end]
        if not _safely(push, batch):
            return False
        self.last_seq = batch[-1].seq
        if batch[-1].terminal:
            self.finished = True
            return False
        return True

    def _take(self, batch: Sequence[HubEvent]) -> list[HubEvent]:
        out: list[HubEvent] = []
        for event in batch:
            if event.seq <= self.last_seq:  # never a duplicate
                continue
            out.append(event)
            self.last_seq = event.seq
            if event.terminal:
                self.finished = True
                break
        return out

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[HubEvent] | Heartbeat:
        tail = self._tail
        if tail is None:
            raise RuntimeError("iterate a subscription inside `async with`")
        limit = tail.config.batch_size
        while not self.finished:
            if tail.error is not None:
                raise StreamBroken(f"the event reader of run {tail.run_id} failed")
            batch: list[HubEvent] | None
            if self.last_seq < tail.base_seq:
                batch = await tail.replay(self.last_seq)
                if not batch:
                    # Postgres has nothing after the cursor below the tail's start (the
                    # log was cut under us): what it has is what the tail holds.
                    self.last_seq = max(self.last_seq, tail.base_seq)
                    continue
            else:
                batch = tail.after(self.last_seq, limit)
            if batch:
                taken = self._take(batch)
                if taken:
                    return taken
                continue
            if tail.head_terminal and self.last_seq >= tail.last_seq:
                # The run ended while this cursor was already at or past its end.
                self.finished = True
                break
            beats = tail.beats
            await tail.wait(self)
            if self.finished:
                break  # the reader pushed the terminal event
            if tail.beats != beats and self.last_seq >= tail.last_seq and tail.error is None:
                return HEARTBEAT
        raise StopAsyncIteration


class EventHub:
    """The run tails of this process, and the sweeper enforcing the write timeout."""

    def __init__(self, log_: EventLog, announcements: Announcements, config: HubConfig) -> None:
        self._log = log_
        self._announcements = announcements
        self.config = config
        self._tails: dict[UUID, RunTail] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def tail(self, run_id: UUID) -> RunTail | None:
        """The run's tail while it has subscribers here."""
        return self._tails.get(run_id)

    @property
    def subscribers(self) -> int:
        return sum(len(tail.subscribers) for tail in self._tails.values())

    def subscribe(self, run_id: UUID, tenant_id: str, after_seq: int) -> Subscription:
        """A cursor after `after_seq`, to use with `async with` (`finished`: the client
        already has the run's end)."""
        return Subscription(self, run_id, tenant_id, after_seq)

    def _join(self, subscription: Subscription) -> RunTail:
        run_id = subscription.run_id
        tail = self._tails.get(run_id)
        if tail is None or tail.error is not None:
            tail = RunTail(
                self._log, self._announcements, self.config, run_id, subscription.tenant_id
            )
            self._tails[run_id] = tail
        tail.subscribers.add(subscription)
        self._start_sweeper()
        return tail

    def _leave(self, subscription: Subscription, tail: RunTail) -> None:
        tail.subscribers.discard(subscription)
        if not tail.subscribers:
            if self._tails.get(tail.run_id) is tail:
                del self._tails[tail.run_id]
            tail.close()

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="event-hub-write-timeouts")

    async def _sweep(self) -> None:
        # One scan of every cursor a few times per timeout instead of a timer per write:
        # a write costs two attribute stores, and a stuck one is cut within 1.25 timeouts.
        timeout = self.config.write_timeout_seconds
        while self._tails:
            await asyncio.sleep(timeout / 4)
            now = time.monotonic()
            for tail in list(self._tails.values()):
                for subscription in list(tail.subscribers):
                    if subscription.check_stall(now, timeout):
                        log.info(
                            "cut an SSE client of run %s: a write took over %ss",
                            tail.run_id,
                            timeout,
                        )

    async def close(self) -> None:
        tails = list(self._tails.values())
        self._tails.clear()
        for tail in tails:
            tail.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for tail in tails:
            await tail.wait_closed()
        if self._sweeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """True when `event` was set within `seconds`."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


def _safely(push: Push, item: Sequence[HubEvent] | Heartbeat) -> bool:
    # The reader pushes to every stream of the run: one broken stream must not stop it
    # (its task finds out on its own write).
    try:
        return push(item)
    except Exception:
        log.debug("pushing to an SSE stream failed", exc_info=True)
        return False
