"""What a model call is asked and what it gives back, independent of the provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sba_core.answers import Citation, SourceHit


class Provider(StrEnum):
    BUILTIN = "builtin"
    """Offline: an extractive answer with citations, composed from the run's search hits."""
    OPENAI = "openai"
    """Any OpenAI-compatible chat-completions server, through the official SDK."""


@dataclass(frozen=True)
class ModelConfig:
    """Where a tenant's model calls go. The key is never logged or shown."""

    provider: Provider = Provider.BUILTIN
    model: str = "sba-extractive"
    fallback_model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 60.0
    max_retries: int = 2
    """Transient errors (connection, 408, 409, 429, 5xx) retried by the SDK, per model."""

    def models(self, override: str | None = None) -> list[str]:
        """The models to try, in order: the step's (or configured) one, then the fallback."""
        first = override or self.model
        chain = [first]
        if self.fallback_model and self.fallback_model != first:
            chain.append(self.fallback_model)
        return chain

    @property
    def endpoint(self) -> str:
        """The provider's identity for the circuit breaker (no credential in it)."""
        return f"{self.provider}:{self.base_url or ''}"


@dataclass(frozen=True)
class ChatRequest:
    messages: Sequence[dict[str, Any]]
    """OpenAI chat messages (role, content, tool_calls, tool_call_id)."""
    temperature: float = 0.2
    max_tokens: int = 800
    tools: Sequence[dict[str, Any]] = ()
    """OpenAI `tools` (function definitions); empty: plain text."""
    question: str = ""
    """The run's goal: the builtin model answers it."""
    hits: Sequence[SourceHit] = ()
    """Knowledge hits from earlier steps: the builtin model's only material."""
    locale: str = "en"


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallOut:
    id: str
    name: str
    arguments: str
    """JSON text, as the model wrote it (not yet checked against the tool's contract)."""


@dataclass(frozen=True)
class Completion:
    """The end of one model call: what it wrote in all, and what it cost."""

    text: str
    model: str
    provider: Provider
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: tuple[ToolCallOut, ...] = ()
    citations: tuple[Citation, ...] = ()
    fallback_reasons: tuple[str, ...] = ()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


StreamItem = TextDelta | Completion


class ModelCallError(Exception):
    """One model could not answer. `retryable`: worth trying again later (or elsewhere)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class ModelsUnavailable(ModelCallError):
    """Every model of the chain failed (or its circuit is open); the reasons in order."""

    def __init__(self, reasons: Sequence[str], *, retryable: bool) -> None:
        super().__init__("no model could answer: " + "; ".join(reasons), retryable=retryable)
        self.reasons = tuple(reasons)


class PartialAnswer(ModelCallError):
    """A model failed after it had started writing: the text so far cannot be taken back,
    so the caller retries the same request (and skips what was already delivered)."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message, retryable=True)
        self.written = written
