"""The agent loop (spec.mode: loop): turns propose calls, calls become visible steps that
go through approvals like any other, a denial is reported back, maxSteps bounds it all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sba_core import agent_loop
from sba_core.events import EventType
from sba_core.models.run import RunPhase, StepPhase
from sba_core.tools.registry import builtin_registry
from sba_operator.reconcile.model import JobState, ObservedToolCall
from tests.unit.test_run_semantics import approval, decide, job, keys, run_obj, then


def _turn(*calls: tuple[str, dict[str, Any]], text: str = "") -> dict[str, Any]:
    return {
        "text": text,
        "model": "m",
        "provider": "openai",
        "toolCalls": [
            {"id": f"call_{i}", "name": name, "arguments": args}
            for i, (name, args) in enumerate(calls, start=1)
        ],
    }


SEARCH_TURN = _turn(("knowledge.search", {"query": "refunds", "topK": 5}))
ANSWER = _turn(text="Refunds take 30 days [1].")


def test_expand_rebuilds_the_plan_from_the_turns() -> None:
    assert [s.id for s in agent_loop.expand({}, locale="en", max_steps=8)] == ["turn-1"]
    steps = agent_loop.expand({"turn-1": SEARCH_TURN}, locale="id", max_steps=8)
    assert [(s.id, s.tool) for s in steps] == [
        ("turn-1", "llm.generate"),
        ("t1-1-knowledge-search", "knowledge.search"),
        ("turn-2", "llm.generate"),
    ]
    assert steps[0].params == {"prompt": "{goal}", "agent": True, "locale": "id"}
    assert steps[1].params == {"query": "refunds", "topK": 5}
    done = agent_loop.expand({"turn-1": SEARCH_TURN, "turn-2": ANSWER}, locale="en", max_steps=8)
    assert [s.id for s in done][-1] == "turn-2"  # an answer ends the loop
    with pytest.raises(agent_loop.LoopLimitExceeded, match="maxSteps=2"):
        agent_loop.expand({"turn-1": SEARCH_TURN}, locale="en", max_steps=2)


@given(st.integers(1, 50), st.integers(1, 50), st.text(min_size=1, max_size=80))
def test_call_step_ids_are_dns_labels_of_at_most_40_chars(turn: int, k: int, tool: str) -> None:
    step = agent_loop.call_step_id(turn, k, tool)
    assert len(step) <= 40
    assert step.startswith(f"t{turn}-")
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in step)
    assert step == step.lower()
    assert not step.endswith("-")


def test_the_history_shows_each_call_and_its_outcome() -> None:
    turns = {
        "turn-1": _turn(("knowledge.search", {"query": "q"}), ("crm.sync", {"scope": ["deals"]}))
    }
    outcomes = {
        "t1-1-knowledge-search": agent_loop.CallOutcome(True, {"hits": []}),
        "t1-2-crm-sync": agent_loop.CallOutcome(False, error="not run: denied by ayu: no"),
    }
    messages = agent_loop.history(2, turns, outcomes)
    assistant, first, second = messages
    assert assistant["role"] == "assistant"
    names = [c["function"]["name"] for c in assistant["tool_calls"]]
    assert names == ["knowledge__search", "crm__sync"]  # OpenAI function names: no dots
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"scope": ["deals"]}
    assert (first["role"], first["tool_call_id"], first["content"]) == (
        "tool",
        "call_1",
        '{"hits": []}',
    )
    assert second["content"] == "failed: not run: denied by ayu: no"
    tools = {t["function"]["name"] for t in agent_loop.openai_tools(builtin_registry())}
    assert "llm__generate" not in tools
    assert {"knowledge__search", "crm__sync"} <= tools


def _loop_run(**spec: Any) -> dict[str, Any]:
    return run_obj(mode="loop", prompt="What is the refund policy?", **spec)


def test_a_loop_run_starts_with_a_model_turn() -> None:
    d = decide(_loop_run())
    assert d.status.phase is RunPhase.EXECUTING
    (turn,) = d.status.steps
    assert (turn.id, turn.tool, turn.phase) == ("turn-1", "llm.generate", StepPhase.RUNNING)
    assert d.start_steps[0].params["agent"] is True


def _finished(step: str, result: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    return {
        "jobs": {
            f"r1-{step}-a{attempt}": job(f"r1-{step}-a{attempt}", step, attempt, JobState.SUCCEEDED)
        },
        "tool_calls": {
            (step, attempt): ObservedToolCall(id=f"c-{step}", success=True, result=result)
        },
    }


def test_a_proposed_call_becomes_a_visible_step_then_the_next_turn_answers() -> None:
    run = _loop_run()
    run = then(run, decide(run))
    d = decide(run, turn_results={"turn-1": SEARCH_TURN}, **_finished("turn-1", SEARCH_TURN))
    assert [s.id for s in d.status.steps] == ["turn-1", "t1-1-knowledge-search", "turn-2"]
    assert d.status.steps[1].phase is StepPhase.RUNNING
    proposed = next(e for e in d.events if e.type is EventType.STEP_PROPOSED)
    assert proposed.payload["tool"] == "knowledge.search"
    assert proposed.payload["params"] == {"query": "refunds", "topK": 5}
    run = then(run, d)
    hits = {"query": "refunds", "hits": []}
    d = decide(
        run, turn_results={"turn-1": SEARCH_TURN}, **_finished("t1-1-knowledge-search", hits)
    )
    assert d.status.steps[2].phase is StepPhase.RUNNING  # turn 2 asks the model again
    run = then(run, d)
    turns = {"turn-1": SEARCH_TURN, "turn-2": ANSWER}
    d = decide(run, turn_results=turns, **_finished("turn-2", ANSWER))
    assert d.status.phase is RunPhase.COMPLETED
    assert d.status.result is not None
    assert d.status.result.answer == "Refunds take 30 days [1]."
    assert len(d.status.steps) == 3


def test_a_denied_call_is_skipped_and_reported_to_the_model() -> None:
    sync = _turn(("crm.sync", {"scope": ["contacts"]}))
    run = _loop_run(approvalPolicy={"sideEffects": True})
    run = then(run, decide(run))
    d = decide(run, turn_results={"turn-1": sync}, **_finished("turn-1", sync))
    waiting = d.status.steps[1]
    assert waiting.phase is StepPhase.AWAITING_APPROVAL
    assert d.status.phase is RunPhase.AWAITING_APPROVAL
    assert waiting.approval is not None
    run = then(run, d)
    no = approval("a1", waiting.approval.digest, decision="denied", step=waiting.id)
    d = decide(run, turn_results={"turn-1": sync}, approvals=(no,))
    skipped = d.status.steps[1]
    assert skipped.phase is StepPhase.SKIPPED
    assert d.status.phase is RunPhase.EXECUTING  # not failed: the loop goes on
    assert d.status.steps[2].phase is StepPhase.RUNNING
    (told,) = d.record_inputs
    assert told.step_id == skipped.id
    assert told.error is not None
    assert "denied by alice" in told.error
    assert f"step:{skipped.id}:skipped" in keys(d)


def test_a_loop_past_max_steps_fails_with_a_reason() -> None:
    many = _turn(*[("knowledge.search", {"query": f"q{i}"}) for i in range(5)])
    run = _loop_run(options={"maxSteps": 4})
    run = then(run, decide(run))
    d = decide(run, turn_results={"turn-1": many}, **_finished("turn-1", many))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "MaxStepsExceeded"
    assert "maxSteps=4" in (d.status.message or "")


def test_a_loop_may_not_call_a_tool_the_tenant_does_not_allow() -> None:
    from tests.unit.test_run_semantics import tenant

    sync = _turn(("crm.sync", {"scope": ["contacts"]}))
    allowed = tenant(allowed_tools=("llm.generate", "knowledge.search"))
    run = _loop_run()
    run = then(run, decide(run, tenant=allowed))
    d = decide(run, tenant=allowed, turn_results={"turn-1": sync}, **_finished("turn-1", sync))
    assert d.status.phase is RunPhase.FAILED
    assert "crm.sync" in (d.status.message or "")


def test_a_loop_with_an_explicit_plan_is_refused() -> None:
    d = decide(run_obj(mode="loop", plan=[{"tool": "knowledge.search", "params": {"query": "x"}}]))
    assert d.status.phase is RunPhase.FAILED
    assert "give no plan" in (d.status.message or "")
