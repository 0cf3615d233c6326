"""The run lifecycle as a pure state machine.

Every phase change the operator makes goes through `transition`, so an illegal
move (say, a completed run going back to executing) is refused with a reason
instead of silently rewriting history.
"""

from __future__ import annotations

from collections.abc import Mapping

from sba_core.models.run import RunPhase

TERMINAL_PHASES: frozenset[RunPhase] = frozenset(
    {RunPhase.COMPLETED, RunPhase.FAILED, RunPhase.CANCELLED}
)

ALLOWED: Mapping[RunPhase, frozenset[RunPhase]] = {
    RunPhase.PENDING: frozenset({RunPhase.PLANNING, RunPhase.FAILED, RunPhase.CANCELLED}),
    RunPhase.PLANNING: frozenset({RunPhase.EXECUTING, RunPhase.FAILED, RunPhase.CANCELLED}),
    RunPhase.EXECUTING: frozenset(
        {
            RunPhase.AWAITING_APPROVAL,
            RunPhase.COMPLETED,
            RunPhase.FAILED,
            RunPhase.CANCELLED,
        }
    ),
    RunPhase.AWAITING_APPROVAL: frozenset(
        {RunPhase.EXECUTING, RunPhase.FAILED, RunPhase.CANCELLED}
    ),
    RunPhase.COMPLETED: frozenset(),
    RunPhase.FAILED: frozenset(),
    RunPhase.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, current: RunPhase, target: RunPhase) -> None:
        allowed = ", ".join(sorted(ALLOWED[current])) or "nothing (terminal)"
        super().__init__(f"a run in phase {current} cannot move to {target}; allowed: {allowed}")
        self.current = current
        self.target = target


def is_terminal(phase: RunPhase) -> bool:
    return phase in TERMINAL_PHASES


def can_transition(current: RunPhase, target: RunPhase) -> bool:
    return target in ALLOWED[current]


def transition(current: RunPhase, target: RunPhase) -> RunPhase:
    """The new phase, or IllegalTransition explaining why not."""
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target
