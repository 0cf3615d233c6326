"""One model call with everything around it: the fallback chain and the circuit breakers.

`ModelRouter.stream(config, request, model=...)` tries the step's model (or the
configured one), then the fallback model. A model whose circuit is open is passed
over without a call; a model that fails before writing anything counts a failure
and the next one is tried; one that fails after it started writing raises
`PartialAnswer` (the caller resumes: the text already delivered cannot be unsaid).
Every pass-over is a reason in the final `Completion.fallback_reasons`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol

from sba_llm.breaker import CircuitBreaker
from sba_llm.builtin import BuiltinModel
from sba_llm.openai_chat import OpenAIChat
from sba_llm.types import (
    ChatRequest,
    Completion,
    ModelCallError,
    ModelConfig,
    ModelsUnavailable,
    PartialAnswer,
    Provider,
    StreamItem,
    TextDelta,
)

log = logging.getLogger(__name__)

_MAX_CLIENTS = 256


class ChatModel(Protocol):
    def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamItem]: ...


class ModelRouter:
    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        builtin: BuiltinModel | None = None,
    ) -> None:
        self.breaker = breaker or CircuitBreaker()
        self._builtin = builtin or BuiltinModel()
        self._clients: dict[tuple[str | None, str | None, float, int], OpenAIChat] = {}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def _provider(self, config: ModelConfig) -> ChatModel:
        if config.provider is Provider.BUILTIN:
            return self._builtin
        key = (config.base_url, config.api_key, config.timeout_seconds, config.max_retries)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= _MAX_CLIENTS:
                self._clients.pop(next(iter(self._clients)))
            client = self._clients[key] = OpenAIChat(config)
        return client

    async def stream(
        self, config: ModelConfig, request: ChatRequest, *, model: str | None = None
    ) -> AsyncIterator[StreamItem]:
        provider = self._provider(config)
        reasons: list[str] = []
        retryable = False
        for name in config.models(model):
            key = f"{config.endpoint}/{name}"
            if not self.breaker.allow(key):
                reasons.append(f"model {name}: circuit open after repeated failures")
                retryable = True
                continue
            written = 0
            try:
                async for item in provider.stream(name, request):
                    if isinstance(item, TextDelta):
                        written += len(item.text)
                        yield item
                    else:
                        self.breaker.success(key)
                        yield replace(item, fallback_reasons=tuple(reasons))
                        return
            except ModelCallError as exc:
                self.breaker.failure(key)
                log.warning("model %s failed: %s", name, exc)
                if written:
                    raise PartialAnswer(f"model {name} failed mid-answer: {exc}", written) from exc
                reasons.append(f"model {name}: {exc}")
                retryable = retryable or exc.retryable
                continue
            raise ModelCallError(f"model {name} ended without a completion", retryable=True)
        raise ModelsUnavailable(reasons, retryable=retryable)


__all__ = ["ChatModel", "Completion", "ModelRouter"]
