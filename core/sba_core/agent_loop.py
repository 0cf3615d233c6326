"""The agent loop (`spec.mode: loop`), pure: model turns propose tool calls, calls become steps.

A loop run starts with one step, `turn-1`: an `llm.generate` step with `agent: true`,
whose model sees the goal, the tools the run may use (as OpenAI `tools`) and every
earlier call with its outcome. A turn's result either proposes tool calls — each
becomes a visible step of its own (`t<n>-<k>-<tool>`), planned, approved, rate-limited
and retried like any other — followed by the next turn, or answers, and the run is done.

`expand` rebuilds the whole plan from the turns' stored results, so every reconcile
(and the model gateway, building a turn's history) derives the same steps with the
same ids; `history` is the chat transcript a turn is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sba_core.planning import PlannedStep, PlanningError
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolRegistry

TURN_PREFIX: Final = "turn-"
_UNSAFE: Final = re.compile(r"[^a-z0-9-]+")
MAX_RESULT_CHARS: Final = 6000
"""Of one tool result shown back to the model (long results are cut, saying so)."""


class LoopLimitExceeded(PlanningError):
    """The agent proposed more steps than options.maxSteps allows."""


@dataclass(frozen=True)
class ProposedCall:
    id: str
    tool: str
    arguments: dict[str, Any]


def turn_id(n: int) -> str:
    return f"{TURN_PREFIX}{n}"


def turn_number(step_id: str) -> int | None:
    if not step_id.startswith(TURN_PREFIX):
        return None
    tail = step_id[len(TURN_PREFIX) :]
    return int(tail) if tail.isdigit() else None


def call_step_id(turn: int, index: int, tool: str) -> str:
    """The step id of the index-th call (1-based) proposed by turn `turn`: ≤ 40 characters."""
    slug = _UNSAFE.sub("-", tool.lower()).strip("-") or "tool"
    return f"t{turn}-{index}-{slug}"[:40].rstrip("-")


def turn_step(n: int, locale: str) -> PlannedStep:
    return PlannedStep(
        turn_id(n),
        str(ToolName.LLM_GENERATE),
        {"prompt": "{goal}", "agent": True, "locale": locale},
    )


def proposed_calls(result: Any) -> list[ProposedCall]:
    """The tool calls a turn's result proposes (empty: the model answered)."""
    raw = result.get("toolCalls") if isinstance(result, Mapping) else None
    calls: list[ProposedCall] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, Mapping):
            continue
        args = item.get("arguments")
        calls.append(
            ProposedCall(
                id=str(item.get("id") or ""),
                tool=str(item.get("name") or ""),
                arguments=dict(args) if isinstance(args, Mapping) else {},
            )
        )
    return calls


def expand(turns: Mapping[str, Any], *, locale: str, max_steps: int) -> tuple[PlannedStep, ...]:
    """The loop's steps so far: turn 1, then for each turn with a result, its calls and the
    next turn. A turn that answered (no calls) ends the plan."""
    steps = [turn_step(1, locale)]
    n = 1
    while turn_id(n) in turns:
        calls = proposed_calls(turns[turn_id(n)])
        if not calls:
            break
        for k, call in enumerate(calls, start=1):
            steps.append(PlannedStep(call_step_id(n, k, call.tool), call.tool, call.arguments))
        n += 1
        steps.append(turn_step(n, locale))
    if len(steps) > max_steps:
        raise LoopLimitExceeded(
            f"the agent loop needs more than options.maxSteps={max_steps} steps"
            f" (turn {n} proposed more calls); raise maxSteps or narrow the goal"
        )
    return tuple(steps)


# -- what a turn's model is shown ---------------------------------------------------------


def function_name(tool: str) -> str:
    """OpenAI function names allow [a-zA-Z0-9_-] only: `crm.sync` → `crm__sync`."""
    return tool.replace(".", "__")


def tool_name(function: str) -> str:
    return function.replace("__", ".")


def openai_tools(registry: ToolRegistry) -> list[dict[str, Any]]:
    """The run's tools as OpenAI `tools` (function definitions with their params' schema)."""
    return [
        {
            "type": "function",
            "function": {
                "name": function_name(name),
                "description": spec.description,
                "parameters": spec.params_schema(),
            },
        }
        for name, spec in sorted(registry.items())
        if name != ToolName.LLM_GENERATE
    ]


@dataclass(frozen=True)
class CallOutcome:
    success: bool
    result: Any = None
    error: str | None = None


def _content(outcome: CallOutcome | None) -> str:
    if outcome is None:
        return "no result (the step did not run)"
    if not outcome.success:
        return f"failed: {outcome.error or 'unknown error'}"
    text = json.dumps(outcome.result, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"… (cut; {len(text)} characters in all)"
    return text


def history(
    turn: int, turns: Mapping[str, Any], outcomes: Mapping[str, CallOutcome]
) -> list[dict[str, Any]]:
    """Assistant tool-call messages and tool results of the turns before `turn`."""
    messages: list[dict[str, Any]] = []
    for n in range(1, turn):
        calls = proposed_calls(turns.get(turn_id(n)))
        if not calls:
            break
        ids = [call.id or f"call_{n}_{k}" for k, call in enumerate(calls, start=1)]
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": function_name(call.tool),
                            "arguments": json.dumps(call.arguments, sort_keys=True),
                        },
                    }
                    for call_id, call in zip(ids, calls, strict=True)
                ],
            }
        )
        for k, (call_id, call) in enumerate(zip(ids, calls, strict=True), start=1):
            outcome = outcomes.get(call_step_id(n, k, call.tool))
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _content(outcome)})
    return messages
