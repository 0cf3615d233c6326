"""The operator's LLM planner adapter: the fallback chain and its token accounting.

The chat-completions client is replaced by a scripted fake (no HTTP here; the
integration tests drive the real client, the official SDK, against a stub provider).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from sba_core.models.run import AgentRunSpec
from sba_core.planning import BuiltinPlanner
from sba_core.tools.registry import builtin_registry
from sba_operator.adapters.llm_planner import (
    ChatCompletions,
    LLMCallError,
    LLMPlanner,
    LLMPlanningFailed,
)

REGISTRY = builtin_registry()
PLAN = {"steps": [{"id": "look", "tool": "knowledge.search", "params": {"query": "refunds"}}]}


def body(content: str, prompt: int = 10, completion: int = 5) -> dict[str, Any]:
    return {
        "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


class Scripted(ChatCompletions):
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.models: list[str] = []

    async def complete(self, request: dict[str, Any]) -> Any:
        model = str(request["model"])
        self.models.append(model)
        answer = self.answers[model]
        if isinstance(answer, Exception):
            raise answer
        return answer


def planner(answers: dict[str, Any], fallback: str | None = "m2") -> tuple[LLMPlanner, Scripted]:
    client = Scripted(answers)
    return (
        LLMPlanner(
            client, REGISTRY, model="m1", fallback_model=fallback, builtin=BuiltinPlanner(REGISTRY)
        ),
        client,
    )


def spec(**fields: Any) -> AgentRunSpec:
    return AgentRunSpec.model_validate({"tenant": "t", "prompt": "Refunds?", **fields})


async def test_the_models_plan_is_used() -> None:
    llm, client = planner({"m1": body(json.dumps(PLAN), 100, 20)})
    plan = await llm.plan(spec())
    assert (plan.planner, plan.model, plan.tokens_used) == ("llm", "m1", 120)
    assert (plan.prompt_tokens, plan.completion_tokens) == (100, 20)
    assert [s.id for s in plan.steps] == ["look"]
    assert plan.notes == ()
    assert client.models == ["m1"]


async def test_garbage_then_the_fallback_model() -> None:
    llm, client = planner({"m1": body("nope", 7, 3), "m2": body(json.dumps(PLAN), 20, 5)})
    plan = await llm.plan(spec())
    assert (plan.planner, plan.model, plan.tokens_used) == ("llm", "m2", 35)
    assert len(plan.notes) == 1
    assert plan.notes[0].startswith("model m1: the answer is not JSON")
    assert client.models == ["m1", "m2"]


async def test_unreachable_and_garbage_fall_back_to_the_builtin_planner() -> None:
    llm, _ = planner({"m1": LLMCallError("the provider answered HTTP 500: oops"), "m2": body("{}")})
    plan = await llm.plan(spec())
    assert plan.planner == "builtin"
    assert plan.model is None
    assert plan.tokens_used == 15
    assert "HTTP 500" in plan.notes[0]
    assert "unknown keys" not in plan.notes[1]  # {} has no steps at all
    assert "'steps' must be a non-empty list" in plan.notes[1]
    assert plan.notes[-1] == "planned by the builtin planner instead"
    assert [s.tool for s in plan.steps] == ["knowledge.search", "llm.generate"]


async def test_an_explicit_plan_is_never_sent_to_a_model() -> None:
    llm, client = planner({})
    explicit = [{"id": "x", "tool": "knowledge.search", "params": {"query": "q"}}]
    plan = await llm.plan(spec(plan=explicit))
    assert plan.planner == "explicit"
    assert client.models == []


async def test_when_even_the_builtin_planner_fails_the_tokens_are_reported() -> None:
    llm, _ = planner({"m1": body("nope", 4, 1)}, fallback=None)
    with pytest.raises(LLMPlanningFailed) as failed:
        await llm.plan(spec(options={"maxSteps": 1}))
    assert failed.value.usage.total == 5
    assert "maxSteps" in str(failed.value)


async def test_the_sdk_client_talks_to_an_openai_compatible_server() -> None:
    """The real client (the official SDK) against the OpenAI stand-in: a plan, then errors."""
    from sba_devstack.openai_standin import OpenAIStandIn

    async with OpenAIStandIn(models=("m1",), api_key="sk-plan") as llm:
        client = ChatCompletions(base_url=llm.base_url, api_key="sk-plan", max_retries=0)
        control = llm.base_url.removesuffix("/v1") + "/_control"
        async with aiohttp.ClientSession() as session:
            await session.post(
                f"{control}/script", json={"replies": [{"content": json.dumps(PLAN)}]}
            )
        planned = await LLMPlanner(
            client, REGISTRY, model="m1", builtin=BuiltinPlanner(REGISTRY)
        ).plan(spec())
        assert (planned.planner, planned.model) == ("llm", "m1")
        assert [s.id for s in planned.steps] == ["look"]
        assert planned.tokens_used > 0
        with pytest.raises(LLMCallError, match="HTTP 404"):
            await client.complete({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        await client.close()
        wrong = ChatCompletions(base_url=llm.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(LLMCallError, match="HTTP 401"):
            await wrong.complete({"model": "m1", "messages": [{"role": "user", "content": "x"}]})
        await wrong.close()
    gone = ChatCompletions(base_url=llm.base_url, api_key="k", max_retries=0, timeout_seconds=2)
    with pytest.raises(LLMCallError, match="unreachable"):
        await gone.complete({"model": "m1", "messages": [{"role": "user", "content": "x"}]})
    await gone.close()
