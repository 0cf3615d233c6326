"""What a run would do, before it exists: `POST /api/v1/plan` (seed 000's `POST /agent/plan`).

The builtin planner's plan for the request (the operator makes the same one, unless
an LLM planner is configured: a model's plan cannot be previewed), with each step's
side-effect flag, scopes, cost estimate and — through the same policy code the
operator runs — whether it will wait for a person's approval, and on which terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sba_core import approvals as policy
from sba_core.models.approval import ApprovalPolicy
from sba_core.models.run import AgentRunSpec, RunRequest
from sba_core.planning import BuiltinPlanner, plannable_registry
from sba_core.tools.registry import ToolRegistry


@dataclass(frozen=True)
class StepPreview:
    id: str
    tool: str
    params: dict[str, Any]
    side_effect: bool
    scopes: tuple[str, ...]
    cost_estimate: int
    approval: ApprovalPolicy | None
    """The terms it waits under; None: it runs without asking anyone."""


@dataclass(frozen=True)
class PlanPreview:
    planner: str
    steps: tuple[StepPreview, ...]
    not_allowed: tuple[str, ...]
    """Planned tools the tenant may not use: creating this run would fail."""

    @property
    def cost_estimate(self) -> int:
        return sum(step.cost_estimate for step in self.steps)

    @property
    def approvals_required(self) -> int:
        return sum(1 for step in self.steps if step.approval is not None)


def preview_plan(
    request: RunRequest,
    registry: ToolRegistry,
    *,
    tenant_policy: ApprovalPolicy | None = None,
    allowed_tools: tuple[str, ...] | None = None,
) -> PlanPreview:
    """The plan and its approvals; PlanningError when the request cannot be planned."""
    spec = AgentRunSpec.model_validate(request.model_dump())
    planner_registry = registry if spec.plan else plannable_registry(registry, allowed_tools)
    plan = BuiltinPlanner(planner_registry).plan_sync(spec)
    steps = []
    for step in plan.steps:
        tool = registry[step.tool]
        facts = policy.ToolFacts(
            name=step.tool,
            side_effect=tool.side_effect,
            scopes=tuple(tool.scopes),
            cost_estimate=tool.cost_estimate,
        )
        steps.append(
            StepPreview(
                id=step.id,
                tool=step.tool,
                params=step.params,
                side_effect=tool.side_effect,
                scopes=tuple(tool.scopes),
                cost_estimate=tool.cost_estimate,
                approval=policy.effective_policy(tenant_policy, spec.approval_policy, facts),
            )
        )
    refused = tuple(
        sorted({s.tool for s in steps if allowed_tools is not None and s.tool not in allowed_tools})
    )
    return PlanPreview(planner=plan.planner, steps=tuple(steps), not_allowed=refused)
