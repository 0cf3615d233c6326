"""Per-tenant and per-principal request limits, and a cap on open SSE streams, in Redis.

Both are shared by every API replica. Requests use the exact sliding-window log of
`sba_store.ratelimit` (one sorted set per scope, scored by the Redis server's clock;
one Lua script checks every scope and records the request only when all of them
admit it, so a refused request costs nobody budget).

Stream slots are leases: a sorted set per tenant whose members expire unless the
replica holding them renews them, so a crashed replica's slots free themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

# The sliding window itself is shared with the operator (tool calls per minute).
from sba_store.ratelimit import ADMIT, Decision, Limit, RateLimiter

__all__ = [
    "ADMIT",
    "Decision",
    "Limit",
    "RateLimiter",
    "RequestLimits",
    "StreamSlots",
    "TenantQuotaCache",
]

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "sba:rl"

# KEYS[1]: the tenant's stream slots. ARGV: lease_ms, member, cap.
_ACQUIRE_SLOT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""

_RENEW_SLOT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""


class StreamSlots:
    """At most `cap` open SSE streams per tenant across all replicas."""

    def __init__(self, redis: Redis, *, lease_seconds: float) -> None:
        self._redis = redis
        self._lease_ms = int(lease_seconds * 1000)
        self._renew_every = lease_seconds / 3
        self._acquire: Any = redis.register_script(_ACQUIRE_SLOT)
        self._renew: Any = redis.register_script(_RENEW_SLOT)

    @staticmethod
    def key(tenant: str) -> str:
        return f"{KEY_PREFIX}:sse:{tenant}"

    async def try_acquire(self, tenant: str, cap: int) -> str | None:
        """A slot id, or None when the tenant is at its cap. Redis trouble grants a slot."""
        member = uuid.uuid4().hex
        try:
            granted = await self._acquire(
                keys=[self.key(tenant)], args=[self._lease_ms, member, cap]
            )
        except RedisError as exc:
            log.warning("stream slots unavailable, admitting the stream: %s", exc)
            return member
        return member if int(granted) else None

    async def release(self, tenant: str, member: str) -> None:
        try:
            await self._redis.zrem(self.key(tenant), member)
        except RedisError as exc:
            log.warning("could not release a stream slot (its lease will expire): %s", exc)

    async def _keep_alive(self, tenant: str, member: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                await self._renew(keys=[self.key(tenant)], args=[self._lease_ms, member])
            except RedisError as exc:
                log.warning("could not renew a stream slot: %s", exc)

    @contextlib.asynccontextmanager
    async def held(self, tenant: str, member: str) -> AsyncIterator[None]:
        """Renew the slot while the body runs; release it afterwards."""
        renewer = asyncio.create_task(self._keep_alive(tenant, member))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self.release(tenant, member)


class TenantQuotaCache:
    """A tenant's request limit override (from its Tenant resource), cached per replica."""

    def __init__(self, load: Callable[[str], Awaitable[int | None]], *, ttl_seconds: float) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, int | None]] = {}

    async def get(self, tenant: str) -> int | None:
        now = time.monotonic()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            value = await self._load(tenant)
        except Exception as exc:  # the limit falls back to the default, never fails a request
            log.warning("cannot read the quotas of tenant %s: %s", tenant, exc)
            value = cached[1] if cached is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[tenant] = (now, value)
        return value


class RequestLimits:
    """The limits the auth middleware and the SSE route apply to an authenticated caller."""

    def __init__(
        self,
        limiter: RateLimiter,
        slots: StreamSlots,
        *,
        window_seconds: float,
        tenant_requests: int,
        principal_requests: int,
        sse_streams_per_tenant: int,
        quotas: TenantQuotaCache | None = None,
        on_violation: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self._limiter = limiter
        self._slots = slots
        self._window = window_seconds
        self._tenant = tenant_requests
        self._principal = principal_requests
        self._sse_cap = sse_streams_per_tenant
        self._quotas = quotas
        self._on_violation = on_violation

    def _violated(self, tenant: str, user: str, scope: str) -> None:
        log.warning(
            "rate limit exceeded: tenant %s, %s", tenant, scope, extra={"tenant_id": tenant}
        )
        if self._on_violation is not None:
            self._on_violation(tenant, user, scope)

    async def _tenant_limit(self, tenant: str) -> int:
        per_minute = await self._quotas.get(tenant) if self._quotas is not None else None
        if per_minute is None:
            return self._tenant
        return max(1, math.ceil(per_minute * self._window / 60))

    async def admit(self, tenant: str, user: str) -> Decision:
        decision = await self._limiter.hit(
            [
                Limit("tenant", RateLimiter.tenant_key(tenant), await self._tenant_limit(tenant)),
                Limit("principal", RateLimiter.principal_key(tenant, user), self._principal),
            ]
        )
        if not decision.admitted:
            self._violated(tenant, user, decision.scope or "tenant")
        return decision

    @contextlib.asynccontextmanager
    async def stream_slot(self, tenant: str, user: str) -> AsyncIterator[bool]:
        """Yields True while holding one of the tenant's stream slots, False when none is free."""
        member = await self._slots.try_acquire(tenant, self._sse_cap)
        if member is None:
            self._violated(tenant, user, "sse_streams")
            yield False
            return
        async with self._slots.held(tenant, member):
            yield True
