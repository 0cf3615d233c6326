"""Run events: the durable, ordered record of everything that happened to a run.

The same event is stored in Postgres, announced on Redis and framed as SSE; this
module defines its shape once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from sba_core.models.base import WireModel


class EventType(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PLANNING = "planning"
    PLAN_READY = "plan_ready"
    PLAN_FALLBACK = "plan_fallback"
    """The LLM planner's answer was unusable; the payload says why and who planned instead."""
    EXECUTING = "executing"
    STEP_STARTED = "step_started"
    RATE_LIMITED = "rate_limited"
    """The tenant's quotas.toolCallsPerMinute is used up: the step starts at `retryAt`."""
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_RETRYING = "step_retrying"
    STEP_DEAD_LETTERED = "step_dead_lettered"
    STEP_SKIPPED = "step_skipped"
    STEP_PROPOSED = "step_proposed"
    """Agent loop: the model proposed this call; it is now a step of the run."""
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVAL_ANSWERED = "approval_answered"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    AWAITING_INPUT = "awaiting_input"
    INPUT_RECEIVED = "input_received"
    STEP_PROGRESS = "step_progress"
    """A running step's own progress report (`{stepId, attempt, seq, message, percent}`),
    posted by its tool through the gateway."""
    TOKEN = "token"
    """Streamed model output: `{stepId, attempt, offset, text}`, batched (at most ~50 ms per
    batch); `offset` is the character offset of `text` in the step's answer, so a reader can
    tell a continuation from a repeat."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_EVENTS: frozenset[str] = frozenset(
    {EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED}
)


class EventLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class NewRunEvent(WireModel):
    """An event the operator wants recorded.

    `dedupe_key` is derived from what happened (e.g. `step:search:1:succeeded`),
    so a reconcile repeated after a crash records nothing twice.
    """

    dedupe_key: str
    type: EventType
    level: EventLevel = EventLevel.INFO
    payload: dict[str, Any] = Field(default_factory=dict)


class RunEvent(WireModel):
    """An event as clients see it (seed 000's SSE event shape)."""

    event_id: str
    seq: int
    run_id: str
    tenant_id: str
    ts: datetime
    type: str
    level: str
    payload: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def make_id(run_id: str, seq: int) -> str:
        return f"{run_id}:{seq}"
