"""Streaming chat completions from any OpenAI-compatible server, through the official SDK.

The SDK does the protocol (SSE chunks, `[DONE]`), its own retries of transient errors
(`max_retries`) and timeouts; this adapter turns chunks into `TextDelta`s, accumulates
`delta.tool_calls`, reads usage from the last chunk (`stream_options.include_usage`) and
translates the SDK's exceptions into `ModelCallError` — the one place they are caught.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import openai
from openai import AsyncOpenAI

from sba_llm.types import (
    ChatRequest,
    Completion,
    ModelCallError,
    ModelConfig,
    Provider,
    StreamItem,
    TextDelta,
    ToolCallOut,
)

_RETRYABLE_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def translate(exc: Exception) -> ModelCallError:
    """The SDK's exception as ours: retryable when another try (or model) may succeed."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = str(exc.message or "")[:300]
        return ModelCallError(
            f"HTTP {status}: {detail}".strip(),
            retryable=status in _RETRYABLE_STATUSES,
            status=status,
        )
    if isinstance(exc, openai.APITimeoutError):
        return ModelCallError("the provider timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ModelCallError(f"the provider is unreachable: {exc}", retryable=True)
    return ModelCallError(f"{type(exc).__name__}: {exc}"[:300], retryable=False)


class OpenAIChat:
    def __init__(self, config: ModelConfig) -> None:
        self._client = AsyncOpenAI(
            base_url=config.base_url,
            # The SDK insists on a key; local servers (Ollama, llama.cpp) ignore it.
            api_key=config.api_key or "unused",
            timeout=config.timeout_seconds,
            max_retries=config.max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamItem]:
        try:
            stream = await self._client.chat.completions.create(
                model=model,
                messages=cast(Any, list(request.messages)),
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                tools=cast(Any, list(request.tools)) if request.tools else openai.omit,
            )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        text: list[str] = []
        calls: dict[int, _ToolCallParts] = {}
        finish: str | None = None
        prompt_tokens = completion_tokens = 0
        answered_model = model
        try:
            async for chunk in stream:
                answered_model = chunk.model or answered_model
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens or 0
                    completion_tokens = chunk.usage.completion_tokens or 0
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finish = choice.finish_reason
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        yield TextDelta(delta.content)
                    for part in delta.tool_calls or []:
                        acc = calls.setdefault(part.index, _ToolCallParts())
                        if part.id:
                            acc.id = part.id
                        if part.function is not None:
                            if part.function.name:
                                acc.name = part.function.name
                            if part.function.arguments:
                                acc.arguments.append(part.function.arguments)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        finally:
            await stream.close()
        yield Completion(
            text="".join(text),
            model=answered_model,
            provider=Provider.OPENAI,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tool_calls=tuple(
                ToolCallOut(p.id or f"call_{i}", p.name, "".join(p.arguments))
                for i, p in sorted(calls.items())
            ),
        )
