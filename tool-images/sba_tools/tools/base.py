"""What a tool implementation receives and how the runtime calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from sba_core.tools.registry import ToolContractError
from sba_tools.egress import SafeHttpClient
from sba_tools.gateway import GatewayClient, StepEnvelope
from sba_tools.jsonlog import JsonLogger

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class ToolContext:
    """Everything a tool may use: the gateway, the step it runs, a clock, a logger and
    the SSRF-safe HTTP client for anything outside the cluster."""

    gateway: GatewayClient
    step: StepEnvelope
    now: Callable[[], datetime]
    log: JsonLogger
    http: SafeHttpClient = field(default_factory=SafeHttpClient)


@dataclass(frozen=True)
class ToolImplementation(Generic[P, R]):
    params_type: type[P]
    run: Callable[[ToolContext, P], R]
    summarize: Callable[[R], str]

    def invoke(self, ctx: ToolContext, params: BaseModel) -> R:
        if not isinstance(params, self.params_type):
            raise ToolContractError(
                f"expected {self.params_type.__name__} params, got {type(params).__name__}"
            )
        return self.run(ctx, params)


AnyImplementation = ToolImplementation[Any, Any]
