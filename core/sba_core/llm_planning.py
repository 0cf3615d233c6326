"""The LLM planner's pure half: the chat-completions request and the strict reading of the answer.

The model gets the catalog of the tools the run may use (name, description,
side-effect flag, JSON schema of the params) and the run's prompt and options,
and must answer with one JSON object `{"steps": [{"id", "tool", "params"}]}`.
The answer is read strictly — one JSON object (a single ```json fence is
tolerated), no unknown keys, step ids the Job names can carry — and then checked
by `validate_steps` against the same registry, so a model can never plan a tool
the tenant may not use or params a tool's contract refuses. Every refusal is a
`PlanAnswerError` whose message says why; the operator falls back on it.

No I/O here: the operator's adapter sends `chat_request(...)` and hands the
response body to `read_answer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from sba_core.models.run import AgentRunSpec, PlanStep
from sba_core.planning import PlannedStep, PlanningError, validate_steps
from sba_core.tools.registry import ToolRegistry

MAX_ANSWER_CHARS: Final = 100_000
_STEP_KEYS: Final = frozenset({"id", "tool", "params"})
_TOP_KEYS: Final = frozenset({"steps", "rationale"})
_FENCE: Final = re.compile(r"^```(?:json|JSON)?\s*\n(?P<body>.*)\n?```$", re.DOTALL)

SYSTEM_PROMPT: Final = """\
You plan the work of a business assistant. A plan is a short sequence of tool calls that \
answers the user's request. Use only the tools in the catalog below, with params that \
satisfy each tool's JSON schema.

Rules:
- Answer with exactly one JSON object and nothing else: \
{"steps": [{"id": "...", "tool": "...", "params": {...}}]}. \
You may add a short "rationale" string next to "steps".
- Step ids are lowercase letters, digits and hyphens (at most 40 characters), unique in the plan.
- A step's "sources" param (where a tool has one) lists ids of EARLIER steps whose results it uses.
- Use at most {max_steps} steps.
- Write generated text in the locale {locale}; search with topK {top_k} unless asked otherwise.
- Never invent tools or params.

Tool catalog (JSON):
{catalog}"""


class PlanAnswerError(PlanningError):
    """The model's answer is not a usable plan; the message says why (for the fallback event)."""


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True)
class Answer:
    """What one chat completion gave: its usage always, a plan only when it was valid."""

    usage: TokenUsage
    steps: tuple[PlannedStep, ...]
    rationale: str | None = None


def catalog(registry: ToolRegistry) -> list[dict[str, Any]]:
    """What the model is told about each tool it may use."""
    return [
        {
            "name": str(spec.name),
            "description": spec.description,
            "sideEffect": spec.side_effect,
            "paramsSchema": spec.params_schema(),
        }
        for _, spec in sorted(registry.items(), key=lambda item: item[0])
    ]


def build_messages(spec: AgentRunSpec, registry: ToolRegistry) -> list[dict[str, str]]:
    """The chat messages for planning `spec` with the tools of `registry`."""
    system = (
        SYSTEM_PROMPT.replace("{max_steps}", str(spec.options.max_steps))
        .replace("{locale}", spec.options.locale)
        .replace("{top_k}", str(spec.options.top_k))
        .replace("{catalog}", json.dumps(catalog(registry), sort_keys=True, ensure_ascii=False))
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": spec.prompt},
    ]


def chat_request(
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """The body of `POST {base}/chat/completions` (OpenAI-compatible)."""
    return {
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "response_format": {"type": "json_object"},
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(body: Any) -> TokenUsage:
    """`usage.prompt_tokens` and `usage.completion_tokens`; zero for whatever is missing."""
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if not isinstance(usage, Mapping):
        return TokenUsage()
    return TokenUsage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def answer_text(body: Any) -> str:
    """The first choice's message content; PlanAnswerError when there is none."""
    choices = body.get("choices") if isinstance(body, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise PlanAnswerError("the response has no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str) or not content.strip():
        reason = choice.get("finish_reason")
        raise PlanAnswerError(
            "the answer is empty" + (f" (finish_reason {reason})" if reason else "")
        )
    if choice.get("finish_reason") == "length":
        raise PlanAnswerError("the answer was cut off (finish_reason length)")
    return content


def parse_plan(
    content: str, registry: ToolRegistry, max_steps: int
) -> tuple[tuple[PlannedStep, ...], str | None]:
    """Read a model's answer strictly; (validated steps, rationale) or PlanAnswerError."""
    text = content.strip()
    if len(text) > MAX_ANSWER_CHARS:
        raise PlanAnswerError(f"the answer is longer than {MAX_ANSWER_CHARS} characters")
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanAnswerError(f"the answer is not JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(data, dict):
        raise PlanAnswerError(f"the answer is a JSON {type(data).__name__}, not an object")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise PlanAnswerError(f"the answer has unknown keys {unknown}; expected 'steps'")
    rationale = data.get("rationale")
    if rationale is not None and not isinstance(rationale, str):
        raise PlanAnswerError("'rationale' must be a string")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlanAnswerError("'steps' must be a non-empty list")
    if len(raw_steps) > max_steps:
        raise PlanAnswerError(f"the plan has {len(raw_steps)} steps; maxSteps allows {max_steps}")
    steps: list[PlannedStep] = []
    for index, raw in enumerate(raw_steps):
        where = f"step {index + 1}"
        if not isinstance(raw, dict):
            raise PlanAnswerError(f"{where} is not an object")
        extra = sorted(set(raw) - _STEP_KEYS)
        if extra:
            raise PlanAnswerError(f"{where} has unknown keys {extra}")
        if not isinstance(raw.get("id"), str):
            raise PlanAnswerError(f"{where} has no string 'id'")
        if "params" in raw and not isinstance(raw["params"], dict):
            raise PlanAnswerError(f"{where}: 'params' must be an object")
        try:
            step = PlanStep.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'step'}: {err['msg']}"
                for err in exc.errors()
            )
            raise PlanAnswerError(f"{where}: {problems}") from exc
        assert step.id is not None
        steps.append(PlannedStep(step.id, str(step.tool), dict(step.params)))
    try:
        return validate_steps(steps, registry, max_steps), rationale
    except PlanAnswerError:
        raise
    except PlanningError as exc:
        raise PlanAnswerError(str(exc)) from exc


def read_answer(body: Any, registry: ToolRegistry, max_steps: int) -> Answer:
    """A chat-completions response body -> Answer; PlanAnswerError (carrying no usage) if bad.

    Callers read the usage with `parse_usage` first: a bad answer still cost tokens.
    """
    steps, rationale = parse_plan(answer_text(body), registry, max_steps)
    return Answer(usage=parse_usage(body), steps=steps, rationale=rationale)


def allowed_registry(registry: ToolRegistry, allowed: tuple[str, ...] | None) -> ToolRegistry:
    """The tools a tenant may use (all of them when `allowed` is None)."""
    if allowed is None:
        return registry
    return ToolRegistry([spec for name, spec in registry.items() if name in allowed])
