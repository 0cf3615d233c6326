"""`POST /api/v1/plan`: the plan a run would get, its approvals and cost, creating nothing."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from sba_api.errors import ErrorItem
from sba_api.kube import KubeClient, TenantNotFound
from sba_api.schemas import PlannedStepView, PlanView
from sba_api.services.runs import InvalidPlan
from sba_api.services.tool_catalog import ToolCatalogService
from sba_core.group import tenant_namespace
from sba_core.models.approval import ApprovalPolicy
from sba_core.models.run import RunRequest
from sba_core.plan_preview import preview_plan
from sba_core.planning import PlanningError


class PlanService:
    def __init__(self, kube: KubeClient, tools: ToolCatalogService) -> None:
        self._kube = kube
        self._tools = tools

    async def preview(self, request: RunRequest) -> PlanView:
        tenant = await self._kube.get_tenant(request.tenant)
        if tenant is None:
            raise TenantNotFound(f"tenant {request.tenant!r} not found")
        spec: dict[str, Any] = tenant.get("spec") or {}
        allowed = spec.get("allowedTools")
        registry = await self._tools.registry_for(
            tenant_namespace(request.tenant), need=[str(s.tool) for s in request.plan or []]
        )
        try:
            preview = preview_plan(
                request,
                registry,
                tenant_policy=_policy(spec.get("approvalPolicy")),
                allowed_tools=tuple(allowed) if isinstance(allowed, list) else None,
            )
        except PlanningError as exc:
            raise InvalidPlan(str(exc), details=[ErrorItem(loc="plan", msg=str(exc))]) from exc
        return PlanView(
            planner=preview.planner,
            steps=[
                PlannedStepView(
                    id=s.id,
                    tool=s.tool,
                    params=s.params,
                    side_effect=s.side_effect,
                    scopes=list(s.scopes),
                    cost_estimate=s.cost_estimate,
                    requires_approval=s.approval is not None,
                    approval=s.approval,
                )
                for s in preview.steps
            ],
            cost_estimate=preview.cost_estimate,
            approvals_required=preview.approvals_required,
            not_allowed=list(preview.not_allowed),
        )


def _policy(raw: Any) -> ApprovalPolicy | None:
    if not isinstance(raw, dict):
        return None
    try:
        return ApprovalPolicy.model_validate(raw)
    except ValidationError:
        return None  # admission refuses such a Tenant; the operator ignores it the same way
