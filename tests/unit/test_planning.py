from __future__ import annotations

import pytest

from sba_core.models.run import AgentRunSpec
from sba_core.planning import BuiltinPlanner, PlanningError
from sba_core.tools.registry import builtin_registry


def planner() -> BuiltinPlanner:
    return BuiltinPlanner(builtin_registry())


def spec(**fields: object) -> AgentRunSpec:
    return AgentRunSpec.model_validate(
        {"tenant": "demo", "prompt": "What is the refund policy?", **fields}
    )


def test_builtin_plan_searches_then_renders() -> None:
    plan = planner().plan_sync(spec())
    assert [s.tool for s in plan.steps] == ["knowledge.search", "render.document"]
    assert plan.steps[0].params == {"query": "What is the refund policy?", "topK": 5}
    assert plan.steps[1].params["sources"] == ["search"]
    assert plan.steps[1].params["title"] == "What is the refund policy"


def test_builtin_plan_is_deterministic() -> None:
    prompt = "How do refunds work? What does shipping cost abroad? Who handles returns?"
    assert planner().plan_sync(spec(prompt=prompt)) == planner().plan_sync(spec(prompt=prompt))
    assert len(planner().plan_sync(spec(prompt=prompt)).steps) == 4


def test_builtin_plan_respects_max_steps() -> None:
    prompt = "One? Two? Three? Four? Five?"
    plan = planner().plan_sync(spec(prompt=prompt, options={"maxSteps": 3}))
    assert len(plan.steps) == 3
    assert plan.steps[-1].tool == "render.document"


def test_explicit_plan_is_honoured_and_defaults_filled() -> None:
    plan = planner().plan_sync(
        spec(plan=[{"tool": "knowledge.search", "params": {"query": "returns"}}])
    )
    assert plan.planner == "explicit"
    assert plan.steps[0].id == "s1"
    assert plan.steps[0].params == {"query": "returns", "topK": 5}


def test_explicit_plan_with_bad_params_names_the_field() -> None:
    with pytest.raises(PlanningError, match="query"):
        planner().plan_sync(spec(plan=[{"tool": "knowledge.search", "params": {"topK": 3}}]))


def test_explicit_plan_reading_a_later_step_is_refused() -> None:
    bad = [
        {"id": "doc", "tool": "render.document", "params": {"title": "x", "sources": ["s"]}},
        {"id": "s", "tool": "knowledge.search", "params": {"query": "q"}},
    ]
    with pytest.raises(PlanningError, match="not earlier steps"):
        planner().plan_sync(spec(plan=bad))


def test_duplicate_step_ids_refused() -> None:
    dup = [
        {"id": "a", "tool": "knowledge.search", "params": {"query": "q"}},
        {"id": "a", "tool": "knowledge.search", "params": {"query": "r"}},
    ]
    with pytest.raises(PlanningError, match="used twice"):
        planner().plan_sync(spec(plan=dup))
