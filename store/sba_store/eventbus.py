"""Run-event fan-out over Redis pub/sub.

Postgres is the durable log; Redis only says "run X has events up to seq N".
A listener that misses a message loses nothing: readers always fetch from
Postgres, and they also re-check on their heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio import Redis

CHANNEL_PREFIX = "sba:run-events:"

log = logging.getLogger(__name__)


def channel_for(run_id: str) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


async def announce(redis: Redis, run_id: str, last_seq: int) -> None:
    """Tell every API replica that `run_id` has events up to `last_seq`."""
    await redis.publish(channel_for(run_id), str(last_seq))


class RunEventListener:
    """One pattern subscription per process, fanned out to in-process waiters.

    Thousands of SSE streams share one Redis connection instead of holding one
    each.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._latest: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="run-event-listener")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def latest(self, run_id: str) -> int:
        """The highest seq announced for the run since this process started listening."""
        return self._latest.get(run_id, 0)

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the run gets new events; clear it after reading."""
        event = asyncio.Event()
        self._waiters[run_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[run_id]

    def _notify(self, run_id: str, seq: int) -> None:
        if seq > self._latest.get(run_id, 0):
            self._latest[run_id] = seq
        for event in self._waiters.get(run_id, ()):
            event.set()

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
                    self._ready.set()
                    backoff = 0.2
                    # After a reconnect anything may have been missed: wake every waiter
                    # so it re-reads Postgres.
                    for run_id in list(self._waiters):
                        self._notify(run_id, self._latest.get(run_id, 0))
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        channel = _text(message["channel"])
                        run_id = channel[len(CHANNEL_PREFIX) :]
                        try:
                            seq = int(_text(message["data"]))
                        except ValueError:
                            continue
                        self._notify(run_id, seq)
            except asyncio.CancelledError:
                raise
            except Exception:  # the connection dropped: keep serving from Postgres, retry
                log.warning("run-event listener lost Redis; retrying", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
