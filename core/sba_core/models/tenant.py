"""The Tenant resource (cluster-scoped): who may run what, within which limits."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from sba_core.models.base import WireModel
from sba_core.models.run import Condition
from sba_core.tools.names import ToolName


class TenantPhase(StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    TERMINATING = "terminating"


class TenantQuotas(WireModel):
    max_concurrent_runs: int = Field(default=5, ge=1, le=1000)
    tokens_per_day: int = Field(default=1_000_000, ge=0)
    tool_calls_per_minute: int = Field(default=120, ge=1, le=100_000)


class TenantSpec(WireModel):
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    plan: Annotated[str, StringConstraints(max_length=40)] = "free"
    quotas: TenantQuotas = Field(default_factory=TenantQuotas)
    allowed_tools: list[ToolName] | None = Field(
        default=None, description="Tools runs may use; all registered tools when absent."
    )
    suspended: bool = False


class TenantStatus(WireModel):
    phase: TenantPhase = TenantPhase.PENDING
    namespace: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
