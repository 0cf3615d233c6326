"""The run state machine: every legal move allowed, every other refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sba_core.lifecycle import (
    ALLOWED,
    NEXT,
    TERMINAL_PHASES,
    IllegalTransition,
    Trigger,
    can_fire,
    can_transition,
    fire,
    holds_slot,
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


# -- triggers: what happened, and where it takes a run -----------------------------------------

triggers = st.sampled_from(list(Trigger))


def test_issue_lifecycle_by_triggers() -> None:
    """pending (queued) → planning → executing → awaiting_approval → approved → completed."""
    phase = RunPhase.PENDING
    for trigger in (
        Trigger.ADMITTED,
        Trigger.PLANNED,
        Trigger.APPROVAL_REQUIRED,
        Trigger.APPROVED,
        Trigger.APPROVAL_REQUIRED,
        Trigger.DENIED_SKIPPED,
        Trigger.STEPS_DONE,
    ):
        phase = fire(phase, trigger)
    assert phase is RunPhase.COMPLETED
    waiting = fire(
        fire(fire(RunPhase.PENDING, Trigger.ADMITTED), Trigger.PLANNED), Trigger.APPROVAL_REQUIRED
    )
    assert fire(waiting, Trigger.DENIED) is RunPhase.FAILED
    assert fire(waiting, Trigger.EXPIRED) is RunPhase.FAILED
    assert fire(waiting, Trigger.CANCELLED) is RunPhase.CANCELLED
    assert fire(waiting, Trigger.DEADLINE_EXCEEDED) is RunPhase.FAILED


def test_refusals_name_the_phase_and_the_trigger() -> None:
    with pytest.raises(IllegalTransition, match="completed cannot be approved"):
        fire(RunPhase.COMPLETED, Trigger.APPROVED)
    with pytest.raises(IllegalTransition, match="pending cannot be steps_done"):
        fire(RunPhase.PENDING, Trigger.STEPS_DONE)
    with pytest.raises(IllegalTransition, match="executing cannot be approved"):
        fire(RunPhase.EXECUTING, Trigger.APPROVED)


def test_allowed_table_is_derived_from_the_triggers() -> None:
    for (current, _), target in NEXT.items():
        assert can_transition(current, target)
    for current, targets in ALLOWED.items():
        for target in targets:
            assert any(NEXT[(c, t)] is target for (c, t) in NEXT if c is current)


@given(phases, triggers)
def test_fire_is_total_legal_or_refused(current: RunPhase, trigger: Trigger) -> None:
    if can_fire(current, trigger):
        assert fire(current, trigger) is NEXT[(current, trigger)]
    else:
        with pytest.raises(IllegalTransition) as info:
            fire(current, trigger)
        assert info.value.trigger is trigger
        assert str(current) in str(info.value)


def test_only_active_phases_hold_a_concurrency_slot() -> None:
    assert {p for p in RunPhase if holds_slot(p)} == {
        RunPhase.PLANNING,
        RunPhase.EXECUTING,
        RunPhase.AWAITING_APPROVAL,
    }


class TriggerMachine(RuleBasedStateMachine):
    """Random sequences of what can happen to a run, checked against the issue's rules."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = RunPhase.PENDING
        self.history: list[tuple[RunPhase, Trigger, RunPhase]] = []
        self.waited_for_approval = False

    @rule(trigger=triggers)
    def happen(self, trigger: Trigger) -> None:
        before = self.phase
        if not can_fire(before, trigger):
            with pytest.raises(IllegalTransition, match=f"phase {before} cannot be {trigger}"):
                fire(before, trigger)
            return
        after = fire(before, trigger)
        self.phase = after
        self.history.append((before, trigger, after))
        if after is RunPhase.AWAITING_APPROVAL:
            self.waited_for_approval = True

    @invariant()
    def terminal_is_forever(self) -> None:
        for before, _, after in self.history:
            assert not is_terminal(before), f"left terminal {before} for {after}"

    @invariant()
    def approval_outcomes_only_answer_a_waiting_run(self) -> None:
        answers = {
            Trigger.APPROVED,
            Trigger.DENIED,
            Trigger.DENIED_SKIPPED,
            Trigger.EXPIRED,
            Trigger.EXPIRED_SKIPPED,
        }
        for before, trigger, _ in self.history:
            if trigger in answers:
                assert before is RunPhase.AWAITING_APPROVAL

    @invariant()
    def never_back_to_pending_or_planning(self) -> None:
        for before, _, after in self.history:
            assert after is not RunPhase.PENDING
            if after is RunPhase.PLANNING:
                assert before is RunPhase.PENDING

    @invariant()
    def completion_only_from_executing(self) -> None:
        for before, _, after in self.history:
            if after is RunPhase.COMPLETED:
                assert before is RunPhase.EXECUTING


TestTriggerMachine = TriggerMachine.TestCase
