from __future__ import annotations

import pytest

from sba_core.models.run import AgentRunSpec
from sba_core.planning import BuiltinPlanner, PlanningError
from sba_core.tools.registry import ToolRegistry, builtin_registry


def planner() -> BuiltinPlanner:
    return BuiltinPlanner(builtin_registry())


def spec(**fields: object) -> AgentRunSpec:
    return AgentRunSpec.model_validate(
        {"tenant": "demo", "prompt": "What is the refund policy?", **fields}
    )


def test_a_question_is_searched_then_answered_by_the_model() -> None:
    plan = planner().plan_sync(spec(options={"locale": "id"}))
    assert [s.tool for s in plan.steps] == ["knowledge.search", "llm.generate"]
    assert plan.steps[0].params == {"query": "What is the refund policy?", "topK": 5}
    answer = plan.steps[1]
    assert answer.id == "answer"
    assert answer.params["sources"] == ["search"]
    assert answer.params["prompt"] == "{goal}"
    assert answer.params["locale"] == "id"


@pytest.mark.parametrize(
    "prompt",
    ["Write a report on refunds", "Summarise the handbook.", "Buat laporan tentang pengiriman"],
)
def test_a_document_request_is_answered_then_rendered(prompt: str) -> None:
    plan = planner().plan_sync(spec(prompt=prompt))
    assert [s.tool for s in plan.steps] == ["knowledge.search", "llm.generate", "render.document"]
    assert plan.steps[2].params["sources"] == ["search", "answer"]
    assert plan.steps[2].params["title"] == prompt.rstrip(".")


def test_without_a_model_the_hits_are_rendered() -> None:
    registry = builtin_registry()
    without = ToolRegistry([s for n, s in registry.items() if n != "llm.generate"])
    plan = BuiltinPlanner(without).plan_sync(spec())
    assert [s.tool for s in plan.steps] == ["knowledge.search", "render.document"]
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
    assert plan.steps[-1].tool == "llm.generate"
    report = planner().plan_sync(spec(prompt="Write a report. One? Two?", options={"maxSteps": 3}))
    assert [s.tool for s in report.steps][-2:] == ["llm.generate", "render.document"]


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


# -- intents --------------------------------------------------------------------------------


def test_the_seed_prompt_plans_a_crm_sync_of_contacts_and_deals() -> None:
    plan = planner().plan_sync(spec(prompt="Lanjutkan sinkronisasi CRM untuk kontak dan deal"))
    assert [(s.id, s.tool) for s in plan.steps] == [("crm-sync", "crm.sync")]
    assert plan.steps[0].params["scope"] == ["contacts", "deals"]
    assert plan.steps[0].params["contacts"] == []  # the connector knows what changed


@pytest.mark.parametrize(
    ("prompt", "scope"),
    [
        ("Sync the CRM deals please", ["deals"]),
        ("Sinkronkan kontak ke CRM", ["contacts"]),
        ("Synchronise our CRM", ["contacts", "deals"]),
    ],
)
def test_crm_sync_scope_follows_the_prompt(prompt: str, scope: list[str]) -> None:
    (step,) = planner().plan_sync(spec(prompt=prompt)).steps
    assert step.tool == "crm.sync"
    assert step.params["scope"] == scope


def test_a_crm_question_is_not_a_sync() -> None:
    plan = planner().plan_sync(spec(prompt="What does our CRM store about customers?"))
    assert [s.tool for s in plan.steps] == ["knowledge.search", "llm.generate"]


@pytest.mark.parametrize(
    ("prompt", "title"),
    [
        ("Create a task to call Budi about the renewal.", "call Budi about the renewal"),
        ("Buat tugas untuk menelepon Budi besok", "menelepon Budi besok"),
        ("Tolong buatkan tugas: kirim invoice ke PT Maju", "kirim invoice ke PT Maju"),
    ],
)
def test_a_task_request_creates_a_task_with_its_title(prompt: str, title: str) -> None:
    (step,) = planner().plan_sync(spec(prompt=prompt)).steps
    assert step.tool == "task.create"
    assert step.params["title"] == title


@pytest.mark.parametrize(("prompt", "locale"), [("buat tugas", "id"), ("Create a task", "en")])
def test_a_task_without_a_title_asks_for_it_instead_of_guessing(prompt: str, locale: str) -> None:
    ask, task = planner().plan_sync(spec(prompt=prompt, options={"locale": locale})).steps
    assert (ask.tool, task.tool) == ("user.input", "task.create")
    assert ("judul" in ask.params["prompt"]) == (locale == "id")
    assert task.params["titleFrom"] == ask.id
    assert task.params.get("title") is None


def test_a_title_must_come_from_an_earlier_step() -> None:
    bad = [{"id": "task", "tool": "task.create", "params": {"titleFrom": "later"}}]
    with pytest.raises(PlanningError, match="not an earlier step"):
        planner().plan_sync(spec(plan=bad))
    with pytest.raises(PlanningError, match="exactly one of title and titleFrom"):
        planner().plan_sync(spec(plan=[{"tool": "task.create", "params": {}}]))


# -- plan previews (POST /api/v1/plan) -------------------------------------------------------


def test_a_preview_shows_the_approval_a_side_effect_would_wait_for() -> None:
    from sba_core.models.approval import ApprovalPolicy
    from sba_core.models.run import RunRequest
    from sba_core.plan_preview import preview_plan

    request = RunRequest.model_validate(
        {"tenant": "demo", "prompt": "Lanjutkan sinkronisasi CRM untuk kontak dan deal"}
    )
    policy = ApprovalPolicy(side_effects=True, approvers=["ayu"])
    preview = preview_plan(request, builtin_registry(), tenant_policy=policy)
    (step,) = preview.steps
    assert step.tool == "crm.sync"
    assert step.side_effect
    assert step.scopes == ("write:crm",)
    assert step.approval is not None
    assert step.approval.approvers == ["ayu"]
    assert preview.approvals_required == 1
    assert preview.cost_estimate == step.cost_estimate > 0
    question = RunRequest.model_validate({"tenant": "demo", "prompt": "What is the refund policy?"})
    quiet = preview_plan(question, builtin_registry(), tenant_policy=policy)
    assert quiet.approvals_required == 0
    assert [s.tool for s in quiet.steps] == ["knowledge.search", "llm.generate"]
    limited = preview_plan(
        question, builtin_registry(), allowed_tools=("knowledge.search", "render.document")
    )
    assert [s.tool for s in limited.steps] == ["knowledge.search", "render.document"]
    assert limited.not_allowed == ()
    refused = preview_plan(request, builtin_registry(), allowed_tools=("knowledge.search",))
    assert refused.not_allowed == ("crm.sync",)
