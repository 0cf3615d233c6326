"""Planning: turning a run's prompt (or its explicit plan) into validated tool steps.

`BuiltinPlanner` is deterministic and works offline: the same prompt always
gives the same plan. An LLM planner is another implementation of `Planner`
(the operator's OpenAI-compatible adapter); its prompt and the strict parsing
of its answer are pure code in `sba_core.llm_planning`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sba_core.intents import actions
from sba_core.models.run import AgentRunSpec, PlanStep
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolContractError, ToolRegistry


class PlanningError(ValueError):
    """The run cannot be planned as asked: a permanent failure, with a reason."""


@dataclass(frozen=True)
class PlannedStep:
    id: str
    tool: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlannedStep, ...]
    planner: str
    tokens_used: int = 0
    """LLM tokens spent making the plan (prompt + completion, failed answers included)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Why a planner fell back to another, in order."""
    model: str | None = None
    """The model whose answer became the plan (None: no model's)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Planner(Protocol):
    name: str

    async def plan(self, spec: AgentRunSpec) -> Plan: ...


_SENTENCE = re.compile(r"(?<=[.?!;])\s+|\n+")
_TITLE_LIMIT = 80
_WORD = re.compile(r"\w+", re.UNICODE)
_DOCUMENT_WORDS = frozenset(
    # English
    "report reports document documents brief briefing memo summary summarise summarize"
    " overview write draft prepare"
    # Indonesian
    " laporan dokumen ringkasan ringkas rangkuman rangkum memo tulis tuliskan susun buatkan"
    " siapkan".split()
)
ANSWER_STEP = "answer"
RENDER_STEP = "render"


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def asks_for_document(prompt: str) -> bool:
    """The prompt asks for a written document (a report, a brief, a summary...)."""
    return any(word in _DOCUMENT_WORDS for word in _words(prompt))


def _questions(prompt: str) -> list[str]:
    parts = [p.strip(" \t-*") for p in _SENTENCE.split(prompt)]
    return [p for p in parts if len(p) >= 3]


def _title(prompt: str) -> str:
    first = _questions(prompt)[:1] or [prompt.strip()]
    title = first[0].rstrip(".?!;: ")
    if len(title) > _TITLE_LIMIT:
        title = title[: _TITLE_LIMIT - 1].rstrip() + "…"
    return title or "Document"


def plannable_registry(
    registry: ToolRegistry, allowed_tools: tuple[str, ...] | list[str] | None
) -> ToolRegistry:
    """The tools the builtin planner plans with for a tenant: no model step when the tenant
    may not use one (it then renders the hits instead); other tools are admission's to refuse."""
    if allowed_tools is None or ToolName.LLM_GENERATE in allowed_tools:
        return registry
    return ToolRegistry([spec for name, spec in registry.items() if name != ToolName.LLM_GENERATE])


def explicit_steps(plan: Sequence[PlanStep]) -> list[PlannedStep]:
    """An explicit spec.plan as planned steps (a step without an id is `s<position>`)."""
    return [
        PlannedStep(step.id or f"s{i + 1}", str(step.tool), dict(step.params))
        for i, step in enumerate(plan)
    ]


def validate_steps(
    steps: list[PlannedStep], registry: ToolRegistry, max_steps: int
) -> tuple[PlannedStep, ...]:
    """Check a plan against the registry; params come back with defaults filled in."""
    if not steps:
        raise PlanningError("the plan has no steps")
    if len(steps) > max_steps:
        raise PlanningError(f"the plan has {len(steps)} steps; options.maxSteps allows {max_steps}")
    seen: set[str] = set()
    checked: list[PlannedStep] = []
    for index, step in enumerate(steps):
        if step.id in seen:
            raise PlanningError(f"step id {step.id!r} is used twice")
        seen.add(step.id)
        spec = registry.get(step.tool)
        if spec is None:
            known = ", ".join(sorted(registry))
            raise PlanningError(
                f"step {index + 1} asks for unknown tool {step.tool!r}; known: {known}"
            )
        try:
            params = spec.validate_params(step.params)
        except ToolContractError as exc:
            raise PlanningError(f"step {step.id!r}: {exc}") from exc
        title_from = getattr(params, "title_from", None)
        if title_from is not None and (title_from not in seen or title_from == step.id):
            raise PlanningError(
                f"step {step.id!r} takes its title from {title_from!r}, not an earlier step"
            )
        sources = getattr(params, "sources", None)
        if sources:
            unknown = [s for s in sources if s not in seen or s == step.id]
            if unknown:
                raise PlanningError(
                    f"step {step.id!r} reads from {unknown}, which are not earlier steps"
                )
        checked.append(
            PlannedStep(step.id, step.tool, params.model_dump(mode="json", by_alias=True))
        )
    return tuple(checked)


class BuiltinPlanner:
    """A prompt asking for actions (sync the CRM, create a task: `sba_core.intents`) gets
    those steps. Otherwise: search the knowledge base for each question, then the model answers
    (`llm.generate`, streamed; the builtin extractive model when no provider is set); a
    prompt that asks for a document also gets it rendered from the answer and the hits."""

    name = "builtin"

    def __init__(self, registry: ToolRegistry) -> None:
        self._registry = registry

    def plan_sync(self, spec: AgentRunSpec) -> Plan:
        max_steps = spec.options.max_steps
        if spec.plan:
            steps = explicit_steps(spec.plan)
            return Plan(validate_steps(steps, self._registry, max_steps), planner="explicit")
        intended = actions(spec.prompt, self._registry, spec.options.locale)
        if intended:
            steps = [PlannedStep(s.id, s.tool, dict(s.params)) for s in intended[:max_steps]]
            return Plan(validate_steps(steps, self._registry, max_steps), planner=self.name)
        if max_steps < 2:
            raise PlanningError("the built-in planner needs options.maxSteps of at least 2")
        document = asks_for_document(spec.prompt) and max_steps >= 3
        answer = ToolName.LLM_GENERATE in self._registry
        tail = 1 + (1 if document and answer else 0)
        questions = _questions(spec.prompt) or [spec.prompt.strip()]
        questions = questions[: max_steps - tail]
        searches = [
            PlannedStep(
                "search" if len(questions) == 1 else f"search-{i + 1}",
                str(ToolName.KNOWLEDGE_SEARCH),
                {"query": q[:2000], "topK": spec.options.top_k},
            )
            for i, q in enumerate(questions)
        ]
        steps = list(searches)
        if answer:
            steps.append(
                PlannedStep(
                    ANSWER_STEP,
                    str(ToolName.LLM_GENERATE),
                    {
                        "prompt": "{goal}",
                        "sources": [s.id for s in searches],
                        "locale": spec.options.locale,
                    },
                )
            )
        if document or not answer:
            steps.append(
                PlannedStep(
                    RENDER_STEP,
                    str(ToolName.RENDER_DOCUMENT),
                    {
                        "title": _title(spec.prompt),
                        "locale": spec.options.locale,
                        "sources": [s.id for s in steps],
                    },
                )
            )
        return Plan(validate_steps(steps, self._registry, max_steps), planner=self.name)

    async def plan(self, spec: AgentRunSpec) -> Plan:
        return self.plan_sync(spec)
