"""The LLM planner's pure half: the prompt, the strict reading of answers, token usage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sba_core.llm_planning import (
    PlanAnswerError,
    TokenUsage,
    allowed_registry,
    answer_text,
    build_messages,
    chat_request,
    parse_plan,
    parse_usage,
    read_answer,
)
from sba_core.models.run import AgentRunSpec
from sba_core.tools.registry import builtin_registry

REGISTRY = builtin_registry()


def spec(**fields: Any) -> AgentRunSpec:
    return AgentRunSpec.model_validate(
        {"tenant": "demo", "prompt": "Summarise our refund policy.", **fields}
    )


def completion(content: str, prompt: int = 120, completion_tokens: int = 30) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


GOOD = {
    "steps": [
        {"id": "find", "tool": "knowledge.search", "params": {"query": "refund policy"}},
        {
            "id": "write",
            "tool": "render.document",
            "params": {"title": "Refunds", "sources": ["find"]},
        },
    ]
}


def test_prompt_lists_only_the_allowed_tools_with_their_param_schemas() -> None:
    tools = allowed_registry(REGISTRY, ("knowledge.search", "render.document"))
    messages = build_messages(spec(options={"maxSteps": 4, "locale": "id"}), tools)
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert messages[1]["content"] == "Summarise our refund policy."
    catalog = json.loads(system.split("Tool catalog (JSON):\n", 1)[1])
    assert [t["name"] for t in catalog] == ["knowledge.search", "render.document"]
    assert "query" in catalog[0]["paramsSchema"]["properties"]
    assert "crm.sync" not in system
    assert "at most 4 steps" in system
    assert "locale id" in system


def test_chat_request_asks_for_a_json_object() -> None:
    body = chat_request("m1", [{"role": "user", "content": "x"}], max_tokens=500)
    assert body["model"] == "m1"
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_tokens"] == 500
    assert body["temperature"] == 0.0


def test_a_valid_answer_becomes_validated_steps_with_defaults() -> None:
    answer = read_answer(completion(json.dumps(GOOD)), REGISTRY, 8)
    assert [(s.id, s.tool) for s in answer.steps] == [
        ("find", "knowledge.search"),
        ("write", "render.document"),
    ]
    assert answer.steps[0].params["topK"] == 5  # the contract's default filled in
    assert answer.usage == TokenUsage(120, 30)
    assert answer.usage.total == 150


def test_a_fenced_answer_is_accepted() -> None:
    steps, _ = parse_plan("```json\n" + json.dumps(GOOD) + "\n```", REGISTRY, 8)
    assert len(steps) == 2


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("Sure! Here is your plan: search, then write.", "not JSON"),
        ("[]", "not an object"),
        (json.dumps({"plan": []}), "unknown keys"),
        (json.dumps({"steps": []}), "non-empty list"),
        (json.dumps({"steps": ["search"]}), "not an object"),
        (
            json.dumps({"steps": [{"id": "a", "tool": "shell.exec", "params": {}}]}),
            "tool",
        ),
        (
            json.dumps({"steps": [{"id": "A B", "tool": "knowledge.search", "params": {}}]}),
            "id",
        ),
        (
            json.dumps(
                {"steps": [{"id": "a", "tool": "knowledge.search", "params": {"query": ""}}]}
            ),
            "'a'",
        ),
        (
            json.dumps(
                {
                    "steps": [
                        {"id": "a", "tool": "knowledge.search", "params": {"query": "q"}},
                        {"id": "a", "tool": "knowledge.search", "params": {"query": "q"}},
                    ]
                }
            ),
            "used twice",
        ),
        (
            json.dumps(
                {
                    "steps": [
                        {
                            "id": "w",
                            "tool": "render.document",
                            "params": {"title": "t", "sources": ["later"]},
                        }
                    ]
                }
            ),
            "not earlier steps",
        ),
        (
            json.dumps(
                {
                    "steps": [
                        {
                            "id": "a",
                            "tool": "knowledge.search",
                            "params": {"query": "q"},
                            "retry": {"maxAttempts": 9},
                        }
                    ]
                }
            ),
            "unknown keys",
        ),
    ],
)
def test_unusable_answers_are_refused_with_a_reason(content: str, why: str) -> None:
    with pytest.raises(PlanAnswerError, match=why):
        parse_plan(content, REGISTRY, 8)


def test_too_many_steps_are_refused() -> None:
    steps = [
        {"id": f"s{i}", "tool": "knowledge.search", "params": {"query": "q"}} for i in range(3)
    ]
    with pytest.raises(PlanAnswerError, match="maxSteps allows 2"):
        parse_plan(json.dumps({"steps": steps}), REGISTRY, 2)


def test_a_tool_the_tenant_may_not_use_is_refused() -> None:
    tools = allowed_registry(REGISTRY, ("knowledge.search",))
    with pytest.raises(PlanAnswerError, match=r"unknown tool 'render\.document'"):
        parse_plan(json.dumps(GOOD), tools, 8)


def test_malformed_responses_are_refused() -> None:
    with pytest.raises(PlanAnswerError, match="no choices"):
        answer_text({"choices": []})
    with pytest.raises(PlanAnswerError, match="empty"):
        answer_text({"choices": [{"message": {"content": " "}, "finish_reason": "stop"}]})
    with pytest.raises(PlanAnswerError, match="cut off"):
        answer_text({"choices": [{"message": {"content": "{"}, "finish_reason": "length"}]})


def test_usage_counts_prompt_and_completion_and_tolerates_absence() -> None:
    assert parse_usage({"usage": {"prompt_tokens": 7, "completion_tokens": 5}}).total == 12
    assert parse_usage({}).total == 0
    assert parse_usage({"usage": {"prompt_tokens": -3, "completion_tokens": "9"}}).total == 0
    assert TokenUsage(1, 2) + TokenUsage(3, 4) == TokenUsage(4, 6)
