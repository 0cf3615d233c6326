"""Following a run's event log: replay from Postgres, then tail via the process's hub.

Postgres is the only source of events; a Redis announcement (or the heartbeat timeout)
just means "read Postgres again after the last seq read". Every stream of a run in this
process shares that read (sba_api.services.event_hub), so a missed announcement delays
an event by at most one heartbeat and never loses it, and each stream's cursor (the last
seq sent) means no gap and no duplicate.
"""

from __future__ import annotations

from uuid import UUID

from sba_api.services.event_hub import (
    HEARTBEAT,
    EventHub,
    EventLog,
    Heartbeat,
    HubConfig,
    HubEvent,
    StreamBroken,
    Subscription,
    to_wire,
)
from sba_api.services.runs import RunService
from sba_core.auth.permissions import Principal
from sba_store.eventbus import RunEventListener

__all__ = [
    "HEARTBEAT",
    "EventFeed",
    "EventService",
    "Heartbeat",
    "HubEvent",
    "StreamBroken",
    "to_wire",
]

EventFeed = Subscription
"""A stream's view of its run's events (iterate: batches or HEARTBEAT)."""


class EventService:
    def __init__(
        self,
        runs: RunService,
        events: EventLog,
        listener: RunEventListener,
        *,
        heartbeat_seconds: float,
        batch_size: int,
        tail_events: int = 256,
        tail_bytes: int = 512 * 1024,
        write_timeout_seconds: float = 10.0,
    ) -> None:
        self._runs = runs
        self.hub = EventHub(
            events,
            listener,
            HubConfig(
                heartbeat_seconds=heartbeat_seconds,
                batch_size=batch_size,
                tail_events=tail_events,
                tail_bytes=tail_bytes,
                write_timeout_seconds=write_timeout_seconds,
            ),
        )

    async def authorize(self, principal: Principal, raw_run_id: str) -> tuple[UUID, str]:
        """The run's id and tenant if the principal may follow it (404 / 403 otherwise).

        No query for a run the process already knows: RunService remembers owners, and
        after its check a principal that is not a platform admin can only be following a
        run of its own tenant.
        """
        run_id = await self._runs.authorize(principal, raw_run_id)
        tail = self.hub.tail(run_id)
        if tail is not None:
            return run_id, tail.tenant_id
        if not principal.is_platform_admin:
            return run_id, principal.tenant
        return run_id, (await self._runs.record(run_id)).tenant_id

    def follow(self, run_id: UUID, tenant_id: str, after_seq: int) -> Subscription:
        """The run's events after `after_seq` (`async with`, then iterate); `finished` when
        the client already has the run's end."""
        return self.hub.subscribe(run_id, tenant_id, after_seq)

    async def close(self) -> None:
        await self.hub.close()
