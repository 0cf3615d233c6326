"""Events a running step adds to its run from the API (streamed tokens, progress):
stored once (deduplicated), then announced so every replica's streams read them."""

from __future__ import annotations

import logging
from uuid import UUID

from redis.asyncio import Redis

from sba_api.services._boundary import store_boundary
from sba_core.step_token import StepClaims
from sba_store.eventbus import announce
from sba_store.events import EventRepository
from sba_store.records import NewEvent

log = logging.getLogger(__name__)


async def add_step_event(
    events: EventRepository, redis: Redis, claims: StepClaims, event: NewEvent, what: str
) -> bool:
    """True when `event` was new (False: its dedupe key was already stored)."""
    with store_boundary(what):
        inserted = await events.append(UUID(claims.run_id), claims.tenant, [event])
    if inserted:
        try:
            await announce(redis, claims.run_id, inserted[-1].seq)
        except Exception as exc:  # readers poll Postgres on their heartbeat anyway
            log.warning("could not announce an event of run %s: %s", claims.run_id, exc)
    return bool(inserted)
