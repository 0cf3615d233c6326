"""An agent-loop turn as the model gateway asks it: the tools, the transcript, the checks.

The transcript and the step ids are `sba_core.agent_loop`'s (the operator derives the
same steps from the same stored turns); here they meet the run's stored outcomes and the
tenant's tools, and the model's proposed calls are checked against each tool's contract
before they can become steps — a refused call is sent back to the model with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from sba_core import agent_loop
from sba_core.answers import answer_language, hits_from_results, render_prompt
from sba_core.tools.contracts import LlmGenerateParams, LlmToolCall
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolContractError, ToolRegistry
from sba_llm import ChatRequest, Completion
from sba_store.records import ToolCallRecord

MAX_REASKS: Final = 2
SYSTEM: Final = {
    "en": "You are the business assistant of this tenant, working towards the user's goal."
    " Call the tools you are given when you need information or must act; you will see each"
    " call's result (or why it did not run). When you can, answer in English, citing what"
    " the tools returned. Never invent tools or parameters.",
    "id": "Anda adalah asisten bisnis tenant ini, yang bekerja menuju tujuan pengguna. Panggil"
    " alat yang tersedia bila perlu informasi atau harus bertindak; Anda akan melihat hasil"
    " setiap panggilan (atau alasan ia tidak dijalankan). Bila sudah bisa, jawab dalam bahasa"
    " Indonesia dengan mengutip hasil alat. Jangan mengarang alat atau parameter.",
}


def turn_tools(registry: ToolRegistry, allowed: tuple[str, ...] | None) -> ToolRegistry:
    """What an agent turn may call: the tenant's allowed tools, never a model step."""
    return ToolRegistry(
        [
            spec
            for name, spec in registry.items()
            if name != ToolName.LLM_GENERATE and (allowed is None or name in allowed)
        ]
    )


def turn_request(
    params: LlmGenerateParams,
    goal: str,
    step_id: str,
    outcomes: Mapping[str, ToolCallRecord],
    tools: ToolRegistry,
) -> ChatRequest:
    """An agent turn: the goal, the tools, and every earlier call with its outcome."""
    language = answer_language(params.locale)
    turns = {
        sid: record.result
        for sid, record in outcomes.items()
        if record.success and agent_loop.turn_number(sid) is not None
    }
    results = {
        sid: agent_loop.CallOutcome(bool(record.success), record.result, record.error)
        for sid, record in outcomes.items()
    }
    found = {
        sid: record.result
        for sid, record in outcomes.items()
        if record.success and agent_loop.turn_number(sid) is None
    }
    system = (
        render_prompt(params.system, goal=goal, results={}) if params.system else SYSTEM[language]
    )
    return ChatRequest(
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": render_prompt(params.prompt, goal=goal, results={})},
            *agent_loop.history(agent_loop.turn_number(step_id) or 1, turns, results),
        ],
        temperature=params.temperature,
        max_tokens=params.max_tokens,
        tools=agent_loop.openai_tools(tools),
        question=goal,
        hits=hits_from_results(found),
        locale=params.locale,
    )


def check_calls(completion: Completion, tools: ToolRegistry) -> tuple[list[LlmToolCall], list[str]]:
    """The proposed calls, each checked against its tool's contract; and what was wrong."""
    calls: list[LlmToolCall] = []
    problems: list[str] = []
    for call in completion.tool_calls:
        name = agent_loop.tool_name(call.name)
        spec = tools.get(name)
        if spec is None:
            problems.append(f"{call.name}: no such tool; use one of the tools given")
            continue
        try:
            arguments = json.loads(call.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("the arguments must be a JSON object")
            checked = spec.validate_params(arguments)
        except (ValueError, ToolContractError) as exc:
            problems.append(f"{call.name}: {exc}")
            continue
        calls.append(
            LlmToolCall(
                id=call.id[:200],
                name=name,
                arguments=checked.model_dump(mode="json", by_alias=True),
            )
        )
    return calls, problems


def reask(request: ChatRequest, completion: Completion, problems: list[str]) -> ChatRequest:
    """The same turn again, with the refused calls and why they were refused."""
    assistant = {
        "role": "assistant",
        "content": completion.text or None,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in completion.tool_calls
        ],
    }
    refusals = [
        {"role": "tool", "tool_call_id": c.id, "content": "refused: " + "; ".join(problems)}
        for c in completion.tool_calls
    ]
    return replace(request, messages=[*request.messages, assistant, *refusals])
