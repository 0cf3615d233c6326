"""Model access for the API's model gateway: providers, fallback and circuit breakers.

No I/O beyond the provider's HTTP (the official `openai` SDK) and nothing of the
store, Kubernetes or Redis: metering and quotas belong to the gateway that calls it.
"""

from sba_llm.breaker import CircuitBreaker, CircuitState
from sba_llm.builtin import BUILTIN_MODEL, BuiltinModel
from sba_llm.router import ModelRouter
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
    ToolCallOut,
)

__all__ = [
    "BUILTIN_MODEL",
    "BuiltinModel",
    "ChatRequest",
    "CircuitBreaker",
    "CircuitState",
    "Completion",
    "ModelCallError",
    "ModelConfig",
    "ModelRouter",
    "ModelsUnavailable",
    "PartialAnswer",
    "Provider",
    "StreamItem",
    "TextDelta",
    "ToolCallOut",
]
