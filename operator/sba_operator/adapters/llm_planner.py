"""The LLM planner: an OpenAI-compatible `/chat/completions` client behind `Planner`.

The prompt and the strict reading of the answer are pure (`sba_core.llm_planning`);
this module only sends the request (the official `openai` SDK, which retries 429/5xx
and connection errors a little) and walks the fallback chain:

1. `SBA_LLM_MODEL`; if its answer is unusable (not JSON, unknown tool, params its
   contract refuses, too many steps...) or the call fails,
2. `SBA_LLM_FALLBACK_MODEL` (when set); then
3. the builtin planner.

Every fallback is recorded in `Plan.notes` (the operator puts them in the
`plan_fallback` event), and `Plan.tokens_used` counts every answer's usage,
unusable ones included: they were paid for.
"""

from __future__ import annotations

import logging
from typing import Any

import openai
from openai import AsyncOpenAI

from sba_core.llm_planning import (
    PlanAnswerError,
    TokenUsage,
    build_messages,
    chat_request,
    parse_usage,
    read_answer,
)
from sba_core.models.run import AgentRunSpec
from sba_core.planning import BuiltinPlanner, Plan, PlanningError
from sba_core.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

LLM_PLANNER = "llm"


class LLMCallError(Exception):
    """The provider did not answer usefully (HTTP error, timeout, not JSON)."""


class LLMPlanningFailed(PlanningError):
    """Even the builtin fallback could not plan the run; carries the tokens spent on the way."""

    def __init__(self, message: str, usage: TokenUsage, notes: tuple[str, ...]) -> None:
        super().__init__(message)
        self.usage = usage
        self.notes = notes


class ChatCompletions:
    """`chat.completions.create` through the official `openai` SDK (any OpenAI-compatible
    server): the answer as the provider's JSON body, or LLMCallError. The SDK retries
    connection errors, 408, 409, 429 and 5xx itself (`max_retries`)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout_seconds: float = 30.0,
        max_retries: int = 1,
    ) -> None:
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",  # local servers ignore it; the SDK insists on one
            timeout=timeout_seconds,
            max_retries=max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, body: dict[str, Any]) -> Any:
        try:
            response = await self._client.chat.completions.create(**body)
        except openai.APIStatusError as exc:
            text = str(exc.message or "")[:200]
            raise LLMCallError(f"the provider answered HTTP {exc.status_code}: {text}") from exc
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise LLMCallError(f"the provider is unreachable: {exc}") from exc
        except openai.OpenAIError as exc:
            raise LLMCallError(f"the provider's response is unusable: {exc}"[:300]) from exc
        return response.model_dump(mode="json")


class LLMPlanner:
    """`Planner` asking a chat model for the plan, over the tools in `registry` only."""

    name = LLM_PLANNER

    def __init__(
        self,
        client: ChatCompletions,
        registry: ToolRegistry,
        *,
        model: str,
        fallback_model: str | None = None,
        max_tokens: int = 2000,
        builtin: BuiltinPlanner,
    ) -> None:
        self._client = client
        self._registry = registry
        self._models = [model] + ([fallback_model] if fallback_model else [])
        self._max_tokens = max_tokens
        self._builtin = builtin

    async def plan(self, spec: AgentRunSpec) -> Plan:
        if spec.plan:  # an explicit plan is the client's: no model second-guesses it
            return self._builtin.plan_sync(spec)
        messages = build_messages(spec, self._registry)
        usage = TokenUsage()
        notes: list[str] = []
        for model in self._models:
            request = chat_request(model, messages, max_tokens=self._max_tokens)
            try:
                body = await self._client.complete(request)
            except LLMCallError as exc:
                notes.append(f"model {model}: {exc}")
                continue
            usage = usage + parse_usage(body)
            try:
                answer = read_answer(body, self._registry, spec.options.max_steps)
            except PlanAnswerError as exc:
                notes.append(f"model {model}: {exc}")
                continue
            return Plan(
                steps=answer.steps,
                planner=self.name,
                tokens_used=usage.total,
                notes=tuple(notes),
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        log.warning("LLM planning fell back to the builtin planner: %s", "; ".join(notes))
        notes.append("planned by the builtin planner instead")
        try:
            fallback = self._builtin.plan_sync(spec)
        except PlanningError as exc:
            raise LLMPlanningFailed(str(exc), usage, tuple(notes)) from exc
        return Plan(
            steps=fallback.steps,
            planner=fallback.planner,
            tokens_used=usage.total,
            notes=tuple(notes),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
