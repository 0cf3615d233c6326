"""`POST /api/v1/tools/{name}/execute`: one tool call as a one-step run.

Nothing runs here: the call becomes an AgentRun with an explicit one-step plan,
created exactly as `POST /api/v1/runs` creates runs, so the tool runs sandboxed
in a Job, under the tenant's and the run's approval policy, with its events,
tool-call rows and audit entries like any other step.
"""

from __future__ import annotations

from sba_api.errors import ErrorItem, NotFound, ValidationFailed
from sba_api.schemas import ToolExecuteIn, ToolExecution
from sba_api.services.runs import RunService
from sba_api.services.tool_catalog import ToolCatalogService
from sba_core.auth.permissions import Principal
from sba_core.group import tenant_namespace
from sba_core.models.run import PlanStep, RunOptions, RunRequest
from sba_core.tools.registry import ToolContractError


class ToolNotFound(NotFound):
    code = "tool_not_found"


def step_id_for(tool: str) -> str:
    """`knowledge.search` → `knowledge-search` (a step id is a DNS label)."""
    return tool.replace(".", "-").replace("_", "-").lower()[:40]


class ToolExecutionService:
    def __init__(self, runs: RunService, tools: ToolCatalogService) -> None:
        self._runs = runs
        self._tools = tools

    async def execute(self, principal: Principal, tool: str, body: ToolExecuteIn) -> ToolExecution:
        namespace = tenant_namespace(body.tenant)
        spec = (await self._tools.registry_for(namespace, need=[tool])).get(tool)
        if spec is None:
            raise ToolNotFound(f"no tool named {tool!r} (GET /api/v1/tools lists them)")
        try:
            spec.validate_params(body.params)
        except ToolContractError as exc:
            # 400 naming each offending field as params.<field>.
            details = [
                ErrorItem(loc=f"params.{loc}" if loc else "params", msg=msg)
                for loc, msg in exc.problems
            ]
            raise ValidationFailed(str(exc), details=details) from exc
        step_id = step_id_for(tool)
        request = RunRequest(
            tenant=body.tenant,
            prompt=f"Execute {tool}",
            user=principal.user,
            options=RunOptions(max_steps=1),
            plan=[PlanStep(id=step_id, tool=tool, params=dict(body.params))],
        )
        created = await self._runs.create(request)
        return ToolExecution(
            run_id=created.id,
            name=created.name,
            namespace=created.namespace,
            tenant=created.tenant,
            tool=tool,
            step_id=step_id,
            phase=created.phase,
            links=created.links,
        )
