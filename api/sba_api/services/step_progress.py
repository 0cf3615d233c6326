"""`POST /internal/v1/step/progress`: a running tool step reports how far it got.

Each report becomes a `step_progress` event of the run (deduplicated per attempt and
`seq`), announced like every other event so SSE and AG-UI clients see it at once.
Reports are accepted only while the attempt has no outcome.
"""

from __future__ import annotations

from redis.asyncio import Redis

from sba_api.errors import Conflict
from sba_api.schemas import StepProgressIn, StepProgressRecorded
from sba_api.services.gateway import GatewayService
from sba_api.services.step_events import add_step_event
from sba_core.events import EventType
from sba_core.step_token import StepClaims
from sba_store.events import EventRepository
from sba_store.records import NewEvent


class StepProgressService:
    def __init__(self, gateway: GatewayService, events: EventRepository, redis: Redis) -> None:
        self._gateway = gateway
        self._events = events
        self._redis = redis

    async def report(self, claims: StepClaims, body: StepProgressIn) -> StepProgressRecorded:
        call = await self._gateway.tool_call(claims)
        if call.success is not None:
            raise Conflict(f"step {claims.step_id!r} attempt {claims.attempt} has ended")
        payload: dict[str, object] = {
            "stepId": claims.step_id,
            "attempt": claims.attempt,
            "tool": claims.tool,
            "seq": body.seq,
            "message": body.message,
        }
        if body.percent is not None:
            payload["percent"] = body.percent
        event = NewEvent(
            dedupe_key=f"progress:{claims.step_id}:{claims.attempt}:{body.seq}",
            type=str(EventType.STEP_PROGRESS),
            payload=payload,
        )
        stored = await add_step_event(
            self._events, self._redis, claims, event, "record the step's progress"
        )
        return StepProgressRecorded(seq=body.seq, stored=stored)
