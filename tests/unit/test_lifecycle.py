"""The run state machine: every legal move allowed, every other refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sba_core.lifecycle import (
    ALLOWED,
    TERMINAL_PHASES,
    IllegalTransition,
    can_transition,
    is_terminal,
    transition,
)
from sba_core.models.run import RunPhase

phases = st.sampled_from(list(RunPhase))


def test_every_phase_has_a_rule() -> None:
    assert set(ALLOWED) == set(RunPhase)


def test_terminal_phases_have_no_way_out() -> None:
    for phase in TERMINAL_PHASES:
        assert ALLOWED[phase] == frozenset()
        assert is_terminal(phase)


def test_seed_lifecycle_path_is_legal() -> None:
    path = [
        RunPhase.PENDING,
        RunPhase.PLANNING,
        RunPhase.EXECUTING,
        RunPhase.AWAITING_APPROVAL,
        RunPhase.EXECUTING,
        RunPhase.COMPLETED,
    ]
    current = path[0]
    for target in path[1:]:
        current = transition(current, target)
    assert current is RunPhase.COMPLETED


def test_illegal_transition_names_both_phases() -> None:
    with pytest.raises(IllegalTransition, match="completed cannot move to executing"):
        transition(RunPhase.COMPLETED, RunPhase.EXECUTING)


@given(phases, phases)
def test_transition_agrees_with_table(current: RunPhase, target: RunPhase) -> None:
    if target in ALLOWED[current]:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            transition(current, target)


def test_every_phase_reaches_a_terminal_phase() -> None:
    for start in RunPhase:
        seen, frontier = {start}, [start]
        while frontier:
            phase = frontier.pop()
            for nxt in ALLOWED[phase]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL_PHASES, f"{start} can never finish"


class RunMachine(RuleBasedStateMachine):
    """Random walks: the phase only ever changes through legal moves."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = RunPhase.PENDING
        self.history = [self.phase]

    @rule(goal=phases)
    def attempt(self, goal: RunPhase) -> None:
        legal = can_transition(self.phase, goal)
        try:
            self.phase = transition(self.phase, goal)
        except IllegalTransition:
            assert not legal
        else:
            assert legal
            self.history.append(self.phase)

    @invariant()
    def finished_runs_stay_finished(self) -> None:
        for earlier, later in zip(self.history, self.history[1:], strict=False):
            assert not is_terminal(earlier), f"moved out of terminal {earlier} to {later}"


TestRunMachine = RunMachine.TestCase
