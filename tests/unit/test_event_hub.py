"""The per-process event hub: one read per announcement, cursors, replays, slow clients."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sba_api.errors import ServiceUnavailable
from sba_api.services.event_hub import (
    EventHub,
    Heartbeat,
    HubConfig,
    HubEvent,
    StreamBroken,
    encode_frame,
)
from sba_api.settings import Settings, SettingsError
from sba_store.errors import StoreUnavailable
from sba_store.records import RunEventRecord

RUN = uuid.uuid4()
TENANT = "acme"


class FakeLog:
    """An in-memory run_events table with the repository's two reads."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rows: list[RunEventRecord] = []
        self.list_calls: list[tuple[int, int]] = []
        self.fail = False
        self._rng = rng

    def append(self, *types: str) -> list[int]:
        seqs = []
        for kind in types:
            seq = len(self.rows) + 1
            self.rows.append(
                RunEventRecord(
                    run_id=RUN,
                    seq=seq,
                    tenant_id=TENANT,
                    type=kind,
                    level="info",
                    ts=datetime(2025, 1, 1, tzinfo=UTC),
                    payload={"n": seq},
                    dedupe_key=None,
                )
            )
            seqs.append(seq)
        return seqs

    async def _io(self) -> None:
        # A query takes some loop turns; random ones interleave readers with appends.
        for _ in range(self._rng.randint(0, 3) if self._rng else 1):
            await asyncio.sleep(0)
        if self.fail:
            raise StoreUnavailable("down")

    async def list_after(
        self, run_id: uuid.UUID, after_seq: int = 0, limit: int = 500, *, tenant_id: str
    ) -> list[RunEventRecord]:
        assert (run_id, tenant_id) == (RUN, TENANT)
        self.list_calls.append((after_seq, limit))
        await self._io()
        return [row for row in self.rows if row.seq > after_seq][:limit]

    async def last_seq(self, run_id: uuid.UUID, *, tenant_id: str) -> int:
        await self._io()
        return len(self.rows)


class FakeBus:
    """RunEventListener's watch(): one asyncio.Event per watcher."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    @asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self.waiters[run_id].add(event)
        try:
            yield event
        finally:
            self.waiters[run_id].discard(event)

    def announce(self, run_id: uuid.UUID = RUN) -> None:
        for event in self.waiters[str(run_id)]:
            event.set()

    def reconnect(self) -> None:
        for waiters in self.waiters.values():
            for event in waiters:
                event.set()

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self.waiters.values())


def _hub(
    log: FakeLog,
    bus: FakeBus,
    *,
    heartbeat: float = 30.0,
    batch: int = 100,
    tail_events: int = 256,
    tail_bytes: int = 1 << 20,
    write_timeout: float = 10.0,
) -> EventHub:
    return EventHub(
        log,
        bus,
        HubConfig(
            heartbeat_seconds=heartbeat,
            batch_size=batch,
            tail_events=tail_events,
            tail_bytes=tail_bytes,
            write_timeout_seconds=write_timeout,
        ),
    )


@dataclass
class Reader:
    """A consumer task: what it got, and how it ended."""

    after: int
    seqs: list[int] = field(default_factory=list)
    beats: int = 0
    ended: str = ""
    task: asyncio.Task[None] | None = None
    batches: list[list[HubEvent]] = field(default_factory=list)
    pushed: int = 0


def _start(
    hub: EventHub,
    after: int,
    *,
    pace: Callable[[int], Awaitable[None]] | None = None,
    accept: Callable[[], bool] | None = None,
) -> Reader:
    """`accept`: the stream takes pushes (when it returns True), like an SSE socket."""
    reader = Reader(after)

    def push(item: Sequence[HubEvent] | Heartbeat) -> bool:
        assert accept is not None
        if not accept():
            return False
        if isinstance(item, Heartbeat):
            reader.beats += 1
        else:
            reader.seqs.extend(event.seq for event in item)
            reader.pushed += len(item)
        return True

    async def run() -> None:
        async with hub.subscribe(RUN, TENANT, after) as sub:
            if sub.finished:
                reader.ended = "204"
                return
            if accept is not None:
                sub.push = push
            n = 0
            async for item in sub:
                if isinstance(item, Heartbeat):
                    reader.beats += 1
                    continue
                reader.batches.append(item)
                reader.seqs.extend(event.seq for event in item)
                n += 1
                if pace is not None:
                    await pace(n)
            reader.ended = "end"

    reader.task = asyncio.create_task(run())
    return reader


async def _until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Poll (the conditions are about many tasks' progress, not one event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in itertools.count():
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.001)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


# -- fan-out --------------------------------------------------------------------------


async def test_one_read_per_announcement_is_shared_by_every_subscriber() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append("pending", "planning")
    hub = _hub(log, bus)
    readers = [_start(hub, 0) for _ in range(200)]
    await _until(lambda: all(r.seqs == [1, 2] for r in readers))
    assert bus.watching == 1  # one Redis watch for the run, not one per stream
    primed = len(log.list_calls)
    assert primed == 1  # the tail's priming read served every replay

    log.append("executing")
    bus.announce()
    await _until(lambda: all(r.seqs == [1, 2, 3] for r in readers))
    assert len(log.list_calls) == primed + 1
    # Every stream got the very same event object: one frame encoding per process.
    assert len({id(r.batches[-1][0]) for r in readers}) == 1
    assert readers[0].batches[-1][0].frame == encode_frame(log.rows[2])

    log.append("completed")
    bus.announce()
    await _until(lambda: all(r.ended == "end" for r in readers))
    assert all(r.seqs == [1, 2, 3, 4] for r in readers)
    await _settle()
    assert hub.tail(RUN) is None  # the last one out closes the tail
    assert bus.watching == 0


async def test_resume_points_older_than_the_tail_replay_then_join_without_gap() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append(*["token"] * 30)
    hub = _hub(log, bus, tail_events=5, batch=4)
    for after in (24, 25):  # each opening a fresh tail that holds 26..30: just before it, at it
        edge = _start(hub, after)
        await _until(lambda r=edge: r.seqs[-1:] == [30])  # type: ignore[misc]
        assert edge.seqs == list(range(after + 1, 31))
        edge.task.cancel()  # type: ignore[union-attr]
        await _settle()
        assert hub.tail(RUN) is None
    log.list_calls.clear()
    live = _start(hub, 29)
    await _until(lambda: live.seqs == [30])
    old = _start(hub, 3)
    await _until(lambda: old.seqs == list(range(4, 31)))
    # Replayed in batches of 4 up to the tail's start (seq 25), then served by the tail.
    replays = [call for call in log.list_calls[1:] if call[0] < 25]
    assert replays == [(3, 4), (7, 4), (11, 4), (15, 4), (19, 4), (23, 2)]
    log.append("failed")
    bus.announce()
    await _until(lambda: old.ended == live.ended == "end")
    assert old.seqs == list(range(4, 32))


async def test_subscribers_at_one_old_point_share_one_replay_read() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append(*["token"] * 50)
    hub = _hub(log, bus, tail_events=10, batch=100)
    first = _start(hub, 50)
    await _until(lambda: hub.tail(RUN) is not None and hub.tail(RUN).last_seq == 50)  # type: ignore[union-attr]
    before = len(log.list_calls)
    readers = [_start(hub, 0) for _ in range(100)]
    await _until(lambda: all(r.seqs == list(range(1, 51)) for r in readers))
    assert log.list_calls[before:] == [(0, 40)]
    first.task.cancel()  # type: ignore[union-attr]


async def test_idle_streams_are_pushed_to_without_waking_their_tasks() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append("pending")
    hub = _hub(log, bus, heartbeat=0.05)
    open_ = {"ok": True}
    readers = [_start(hub, 0, accept=lambda: open_["ok"]) for _ in range(50)]
    await _until(lambda: all(r.seqs == [1] for r in readers))
    for seq in (2, 3):
        log.append("token")
        bus.announce()
        await _until(lambda seq=seq: all(r.seqs[-1:] == [seq] for r in readers))  # type: ignore[misc]
    assert all(r.pushed == 2 and len(r.batches) == 1 for r in readers)  # tasks slept
    await _until(lambda: all(r.beats >= 1 for r in readers), within=1)  # heartbeats pushed
    assert all(len(r.batches) == 1 for r in readers)
    open_["ok"] = False  # sockets full: the tasks take over, nothing lost
    log.append("token")
    bus.announce()
    await _until(lambda: all(r.seqs[-1:] == [4] for r in readers))
    assert all(len(r.batches) == 2 and r.pushed == 2 for r in readers)
    open_["ok"] = True
    log.append("token", "completed")  # pushed, and the end ends every stream
    bus.announce()
    await _until(lambda: all(r.ended == "end" for r in readers))
    assert all(r.seqs == [1, 2, 3, 4, 5, 6] and r.pushed == 4 for r in readers)


# -- the end, 204 ---------------------------------------------------------------------


async def test_terminal_event_ends_and_resuming_at_it_is_finished() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append("pending", "executing", "completed")
    hub = _hub(log, bus)
    for after, expected, ended in ((0, [1, 2, 3], "end"), (2, [3], "end"), (3, [], "204")):
        reader = _start(hub, after)
        await _until(lambda r=reader: r.ended != "")  # type: ignore[misc]
        assert (reader.seqs, reader.ended) == (expected, ended)
    past = _start(hub, 99)
    await _until(lambda: past.ended != "")
    assert past.ended == "204"


async def test_a_cursor_past_the_end_ends_when_the_run_ends() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append("pending")
    hub = _hub(log, bus)
    ahead = _start(hub, 7)  # a client with an id from nowhere waits, then ends with the run
    pushed = _start(hub, 2, accept=lambda: True)
    await _settle()
    log.append("executing", "cancelled")
    bus.announce()
    await _until(lambda: ahead.ended == pushed.ended == "end")
    assert ahead.seqs == []
    assert pushed.seqs == [3]


# -- Redis is only a hint -------------------------------------------------------------


async def test_a_missed_announcement_arrives_with_the_heartbeat_and_idle_streams_beat() -> None:
    log, bus = FakeLog(), FakeBus()
    hub = _hub(log, bus, heartbeat=0.05)
    reader = _start(hub, 0)
    await _until(lambda: reader.beats >= 2, within=1)
    log.append("pending")  # never announced
    await _until(lambda: reader.seqs == [1], within=1)
    reader.task.cancel()  # type: ignore[union-attr]


async def test_a_redis_reconnect_makes_every_tail_read_again() -> None:
    log, bus = FakeLog(), FakeBus()
    hub = _hub(log, bus, heartbeat=60)
    reader = _start(hub, 0)
    await _settle()
    log.append("pending", "planning")  # announced while the listener was disconnected
    await asyncio.sleep(0.05)
    assert reader.seqs == []
    bus.reconnect()
    await _until(lambda: reader.seqs == [1, 2])
    reader.task.cancel()  # type: ignore[union-attr]


# -- slow clients ---------------------------------------------------------------------


async def test_a_slow_client_falls_off_the_tail_rereads_and_never_delays_the_others() -> None:
    log, bus = FakeLog(), FakeBus()
    hub = _hub(log, bus, tail_events=4, batch=3)
    gate = asyncio.Event()

    async def stuck(n: int) -> None:
        if n == 1:
            await gate.wait()

    slow = _start(hub, 0, pace=stuck)
    fast = [_start(hub, 0) for _ in range(20)]
    await _settle()
    for i in range(1, 31):
        log.append("token")
        bus.announce()
        await _until(lambda i=i: all(r.seqs[-1:] == [i] for r in fast))  # type: ignore[misc]
    assert slow.seqs == [1]
    tail = hub.tail(RUN)
    assert tail is not None
    assert tail.base_seq == 26
    assert len(tail.after(26, 100) or []) == 4
    gate.set()
    await _until(lambda: slow.seqs == list(range(1, 31)))
    log.append("completed")
    bus.announce()
    await _until(lambda: all(r.ended == "end" for r in [slow, *fast]))
    assert slow.seqs == list(range(1, 32))


async def test_a_write_stuck_past_the_write_timeout_is_cut() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append("pending")
    hub = _hub(log, bus, write_timeout=0.1)
    cut = asyncio.Event()
    never = asyncio.Event()

    async def write(data: bytes) -> None:
        await never.wait()

    async with hub.subscribe(RUN, TENANT, 0) as sub:
        sub.on_stall = cut.set
        sending = asyncio.create_task(sub.send(write, b"x"))
        async with asyncio.timeout(1):
            await cut.wait()
        assert sub.writing_since is not None
        assert not sub.check_stall(sub.writing_since + 99, 0.1)  # cut once, not again
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert sub.writing_since is None

        async def prompt(data: bytes) -> None:
            return None

        await sub.send(prompt, b"y")
        assert sub.writing_since is None


async def test_the_tail_is_bounded_in_bytes() -> None:
    log, bus = FakeLog(), FakeBus()
    log.append(*["token"] * 20)
    last_three = sum(len(HubEvent(row).chunk) for row in log.rows[-3:])
    hub = _hub(log, bus, tail_bytes=last_three)
    async with hub.subscribe(RUN, TENANT, 20) as sub:
        tail = hub.tail(RUN)
        assert tail is not None
        assert (tail.base_seq, tail.last_seq) == (17, 20)
        assert tail.after(10, 10) is None
        assert [e.seq for e in tail.after(17, 10) or []] == [18, 19, 20]
        assert not sub.finished


# -- failures -------------------------------------------------------------------------


async def test_a_failed_first_read_is_503_and_a_later_failure_ends_the_streams() -> None:
    log, bus = FakeLog(), FakeBus()
    hub = _hub(log, bus)
    log.fail = True
    with pytest.raises(ServiceUnavailable):
        async with hub.subscribe(RUN, TENANT, 0):
            pass
    log.fail = False
    errors: list[BaseException] = []

    async def follow() -> None:
        try:
            async with hub.subscribe(RUN, TENANT, 0) as sub:
                async for _ in sub:
                    pass
        except StreamBroken as exc:
            errors.append(exc)

    tasks = [asyncio.create_task(follow()) for _ in range(3)]
    await _settle()
    log.fail = True
    bus.announce()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert len(errors) == 3
    log.fail = False
    log.append("pending")
    reader = _start(hub, 0)  # a new tail replaces the broken one
    await _until(lambda: reader.seqs == [1])
    reader.task.cancel()  # type: ignore[union-attr]


# -- settings -------------------------------------------------------------------------

_ENV = {
    "DATABASE_URL": "postgresql://u@db/sba",
    "REDIS_URL": "redis://redis:6379/0",
    "SBA_STEP_TOKEN_SECRET": "s" * 32,
    "SBA_JWT_HS256_SECRET": "j" * 32,
}


def test_the_sse_settings_of_the_hub() -> None:
    sse = Settings.from_env(_ENV).sse
    assert (sse.write_timeout_seconds, sse.tail_events, sse.tail_bytes) == (10.0, 256, 512 * 1024)
    sse = Settings.from_env(
        {
            **_ENV,
            "SBA_SSE_WRITE_TIMEOUT_SECONDS": "2.5",
            "SBA_SSE_TAIL_EVENTS": "64",
            "SBA_SSE_TAIL_BYTES": "65536",
        }
    ).sse
    assert (sse.write_timeout_seconds, sse.tail_events, sse.tail_bytes) == (2.5, 64, 65536)
    for name, bad in (("SBA_SSE_WRITE_TIMEOUT_SECONDS", "0"), ("SBA_SSE_TAIL_EVENTS", "0")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**_ENV, name: bad})


# -- property: any interleaving --------------------------------------------------------

Op = tuple[Any, ...]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.booleans()),
        st.tuples(
            st.just("subscribe"), st.integers(0, 1000), st.sampled_from(["fast", "slow", "push"])
        ),
        st.tuples(st.just("pause"), st.integers(0, 3)),
        st.tuples(st.just("reconnect")),
        st.tuples(st.just("leave"), st.integers(0, 1000)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=ops,
    tail_events=st.integers(1, 6),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    announce_end=st.booleans(),
    late=st.lists(st.integers(-3, 2), max_size=3),
)
def test_every_subscriber_sees_exactly_the_events_after_its_resume_point(
    plan: list[Op],
    tail_events: int,
    batch: int,
    seed: int,
    announce_end: bool,
    late: list[int],
) -> None:
    asyncio.run(_scenario(plan, tail_events, batch, seed, announce_end, late))


async def _scenario(
    plan: list[Op], tail_events: int, batch: int, seed: int, announce_end: bool, late: list[int]
) -> None:
    rng = random.Random(seed)
    log, bus = FakeLog(rng), FakeBus()
    hub = _hub(log, bus, heartbeat=0.01, batch=batch, tail_events=tail_events)

    async def slow(n: int) -> None:
        await asyncio.sleep(rng.choice([0, 0.001, 0.003]))

    readers: list[Reader] = []
    left: list[Reader] = []
    for op in plan:
        kind = op[0]
        if kind == "append":
            log.append(*["token"] * op[1])
            if op[2]:
                bus.announce()
        elif kind == "subscribe":
            after = op[1] % (len(log.rows) + 3)
            if op[2] == "push":  # a socket that is sometimes full
                readers.append(_start(hub, after, accept=lambda: rng.random() < 0.7))
            else:
                readers.append(_start(hub, after, pace=slow if op[2] == "slow" else None))
        elif kind == "pause":
            await asyncio.sleep(0.001 * op[1])
        elif kind == "reconnect":
            bus.reconnect()
        elif kind == "leave" and readers:
            reader = readers.pop(op[1] % len(readers))
            assert reader.task is not None
            reader.task.cancel()
            left.append(reader)
        await asyncio.sleep(0)
    (end,) = log.append("completed")
    if announce_end:
        bus.announce()
    for offset in late:  # streams opened after the end: the rest of the log, or 204
        readers.append(_start(hub, max(0, end + offset)))
    tasks = [r.task for r in readers if r.task is not None]
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    for reader in readers:
        assert reader.seqs == list(range(reader.after + 1, end + 1)), reader
        assert reader.ended == "end" or (reader.ended == "204" and reader.after >= end), reader
    for reader in left:  # whatever a stream got before it left is a gapless prefix
        assert reader.seqs == list(range(reader.after + 1, reader.after + 1 + len(reader.seqs)))
    await _settle()
    assert hub.tail(RUN) is None
    assert bus.watching == 0
    await hub.close()
