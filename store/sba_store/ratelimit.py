"""Sliding-window rate limits in Redis, shared by every API replica and operator replica.

An exact sliding-window log: one sorted set per scope, scored by the Redis
server's clock (so processes with skewed clocks agree); one Lua script checks
every scope and records the hit only when all of them admit it, so a refused
hit costs nobody budget.

A hit is named by its `member`. The API names each request with a fresh uuid;
the operator names a tool call by (run, step, attempt), so a reconcile repeated
after a conflict or a crash does not count the same attempt twice: a member
already in the window is admitted again without being counted again.

Redis trouble admits the hit (fail open) with a warning: losing the limiter
must not take the API or the runs down.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "sba:rl"

# KEYS: one sorted set per scope. ARGV: window_ms, member, then one limit per key.
# Returns {admitted (1/0), index of the refusing key (1-based, 0 if admitted), retry_ms}.
_SLIDING_WINDOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local member = ARGV[2]
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
end
if redis.call('ZSCORE', KEYS[1], member) then
  return {1, 0, 0}
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + i])
  if redis.call('ZCARD', key) >= limit then
    local retry = window
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] then retry = tonumber(oldest[2]) + window - now end
    if limit <= 0 then retry = window end
    return {0, i, retry}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window + 1000)
end
return {1, 0, 0}
"""


@dataclass(frozen=True)
class Limit:
    scope: str
    """The label a violation is counted under (`tenant`, `principal`, `tool_calls`)."""
    key: str
    limit: int


@dataclass(frozen=True)
class Decision:
    admitted: bool
    scope: str | None = None
    retry_after_seconds: int = 0
    """Whole seconds until the oldest hit leaves the window (at least 1 when refused)."""
    retry_after_ms: int = 0


ADMIT: Final = Decision(admitted=True)


def retry_seconds(retry_ms: int) -> int:
    """Whole seconds to wait (Retry-After): rounded up, never less than one."""
    return max(1, math.ceil(max(retry_ms, 0) / 1000))


def per_window(per_minute: int, window_seconds: float) -> int:
    """A per-minute limit scaled to a window of another length; at least one."""
    return max(1, math.ceil(per_minute * window_seconds / 60))


def retry_at(now: datetime, decision: Decision) -> datetime:
    """When a refused hit may be tried again, rounded up to a whole second.

    Whole seconds because status timestamps carry no fraction; rounding up
    never wakes a caller before the window has room.
    """
    at = now + timedelta(milliseconds=max(decision.retry_after_ms, 0))
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return max(at, now.replace(microsecond=0) + timedelta(seconds=1))


class RateLimiter:
    def __init__(self, redis: Redis, *, window_seconds: float) -> None:
        self._redis = redis
        self._window_ms = int(window_seconds * 1000)
        self._script: Any = redis.register_script(_SLIDING_WINDOW)

    @property
    def window_seconds(self) -> float:
        return self._window_ms / 1000

    @staticmethod
    def tenant_key(tenant: str) -> str:
        return f"{KEY_PREFIX}:t:{tenant}"

    @staticmethod
    def principal_key(tenant: str, user: str) -> str:
        return f"{KEY_PREFIX}:p:{tenant}:{user}"

    @staticmethod
    def tool_calls_key(tenant: str) -> str:
        return f"{KEY_PREFIX}:tools:{tenant}"

    async def hit(self, limits: Sequence[Limit], member: str | None = None) -> Decision:
        """Count one hit against every limit, or refuse it (counting nothing).

        `member` names the hit (a fresh uuid when None); a member already inside the
        window of the first limit is admitted without being counted again.
        """
        if not limits:
            return ADMIT
        try:
            admitted, index, retry_ms = await self._script(
                keys=[limit.key for limit in limits],
                args=[
                    self._window_ms,
                    member or uuid.uuid4().hex,
                    *(limit.limit for limit in limits),
                ],
            )
        except RedisError as exc:
            log.warning("rate limiter unavailable, admitting: %s", exc)
            return ADMIT
        if int(admitted):
            return ADMIT
        return Decision(
            admitted=False,
            scope=limits[int(index) - 1].scope,
            retry_after_seconds=retry_seconds(int(retry_ms)),
            retry_after_ms=max(int(retry_ms), 0),
        )
