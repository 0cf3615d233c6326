"""The run lifecycle as a pure state machine.

Phases (`status.phase`)::

    pending (queued) → planning → executing ⇄ awaiting_approval → completed | failed | cancelled

`approved` and `denied` (and `expired`) are not phases a run rests in: they are
the *outcomes* of an approval request — triggers that move a run out of
`awaiting_approval` (back to `executing`, or to `failed`), recorded as run events
of those names and in the step's `approval.state`. A run waits in one phase at a
time; the outcome is an instant, so it is an event, not a state.

Every phase change the operator makes goes through `fire(phase, trigger)` (or the
lower-level `transition(phase, target)`), so an illegal move — say a completed
run approved, or a pending run completing — is refused with a reason instead of
silently rewriting history.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from sba_core.models.run import RunPhase

TERMINAL_PHASES: frozenset[RunPhase] = frozenset(
    {RunPhase.COMPLETED, RunPhase.FAILED, RunPhase.CANCELLED}
)
ACTIVE_PHASES: frozenset[RunPhase] = frozenset(
    {RunPhase.PLANNING, RunPhase.EXECUTING, RunPhase.AWAITING_APPROVAL}
)
"""Phases that hold one of the tenant's maxConcurrentRuns slots."""


class Trigger(StrEnum):
    """What happened to a run."""

    ADMITTED = "admitted"  # a concurrency slot is free: start planning
    PLANNED = "planned"  # the plan is ready
    APPROVAL_REQUIRED = "approval_required"  # the next step needs a person
    APPROVED = "approved"  # quorum reached
    DENIED = "denied"  # a denial, policy onDeny=fail
    DENIED_SKIPPED = "denied_skipped"  # a denial, policy onDeny=skip
    EXPIRED = "expired"  # nobody answered in time, onExpire=fail
    EXPIRED_SKIPPED = "expired_skipped"  # nobody answered in time, onExpire=skip
    STEPS_DONE = "steps_done"  # every step succeeded or was skipped
    FAILED = "failed"  # invalid spec, planning failed, a step failed or was dead-lettered
    DEADLINE_EXCEEDED = "deadline_exceeded"  # spec.deadlineSeconds passed
    CANCELLED = "cancelled"  # spec.cancel set


_ANY_ACTIVE = (RunPhase.PENDING, *sorted(ACTIVE_PHASES))

NEXT: Mapping[tuple[RunPhase, Trigger], RunPhase] = {
    (RunPhase.PENDING, Trigger.ADMITTED): RunPhase.PLANNING,
    (RunPhase.PLANNING, Trigger.PLANNED): RunPhase.EXECUTING,
    (RunPhase.EXECUTING, Trigger.APPROVAL_REQUIRED): RunPhase.AWAITING_APPROVAL,
    (RunPhase.AWAITING_APPROVAL, Trigger.APPROVED): RunPhase.EXECUTING,
    (RunPhase.AWAITING_APPROVAL, Trigger.DENIED): RunPhase.FAILED,
    (RunPhase.AWAITING_APPROVAL, Trigger.DENIED_SKIPPED): RunPhase.EXECUTING,
    (RunPhase.AWAITING_APPROVAL, Trigger.EXPIRED): RunPhase.FAILED,
    (RunPhase.AWAITING_APPROVAL, Trigger.EXPIRED_SKIPPED): RunPhase.EXECUTING,
    (RunPhase.EXECUTING, Trigger.STEPS_DONE): RunPhase.COMPLETED,
    **{(p, Trigger.FAILED): RunPhase.FAILED for p in _ANY_ACTIVE},
    **{(p, Trigger.CANCELLED): RunPhase.CANCELLED for p in _ANY_ACTIVE},
    # The deadline counts from the start of planning, so a queued run has none yet.
    **{(p, Trigger.DEADLINE_EXCEEDED): RunPhase.FAILED for p in sorted(ACTIVE_PHASES)},
}


def _allowed() -> dict[RunPhase, frozenset[RunPhase]]:
    table: dict[RunPhase, set[RunPhase]] = {phase: set() for phase in RunPhase}
    for (current, _), target in NEXT.items():
        table[current].add(target)
    return {phase: frozenset(targets) for phase, targets in table.items()}


ALLOWED: Mapping[RunPhase, frozenset[RunPhase]] = _allowed()
"""current phase → phases reachable in one move (derived from NEXT)."""


class IllegalTransition(ValueError):
    def __init__(self, current: RunPhase, target: RunPhase, trigger: Trigger | None = None) -> None:
        if trigger is not None:
            accepted = ", ".join(sorted(t for (p, t) in NEXT if p is current))
            reason = (
                f"a run in phase {current} cannot be {trigger}"
                f" (it accepts: {accepted or 'nothing, it is finished'})"
            )
        else:
            allowed = ", ".join(sorted(ALLOWED[current])) or "nothing (terminal)"
            reason = f"a run in phase {current} cannot move to {target}; allowed: {allowed}"
        super().__init__(reason)
        self.current = current
        self.target = target
        self.trigger = trigger


def is_terminal(phase: RunPhase) -> bool:
    return phase in TERMINAL_PHASES


def holds_slot(phase: RunPhase) -> bool:
    """Whether a run in `phase` counts against the tenant's maxConcurrentRuns."""
    return phase in ACTIVE_PHASES


def can_transition(current: RunPhase, target: RunPhase) -> bool:
    return target in ALLOWED[current]


def transition(current: RunPhase, target: RunPhase) -> RunPhase:
    """The new phase, or IllegalTransition explaining why not."""
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target


def can_fire(current: RunPhase, trigger: Trigger) -> bool:
    return (current, trigger) in NEXT


def fire(current: RunPhase, trigger: Trigger) -> RunPhase:
    """The phase `trigger` moves a run in `current` to, or IllegalTransition saying why not."""
    target = NEXT.get((current, trigger))
    if target is None:
        raise IllegalTransition(current, current, trigger)
    return target
