"""`POST /api/v1/tools/{name}/execute`: one tool call as a one-step run.

Nothing runs here: the call becomes an AgentRun with an explicit one-step plan,
created exactly as `POST /api/v1/runs` creates runs, so the tool runs sandboxed
in a Job, under the tenant's and the run's approval policy, with its events,
tool-call rows and audit entries like any other step.
"""

from __future__ import annotations

from pydantic import ValidationError

from sba_api.errors import NotFound, from_validation_error
from sba_api.schemas import ToolExecuteIn, ToolExecution
from sba_api.services.runs import RunService
from sba_core.auth.permissions import Principal
from sba_core.models.run import PlanStep, RunOptions, RunRequest
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolRegistry


class ToolNotFound(NotFound):
    code = "tool_not_found"


def step_id_for(tool: str) -> str:
    """`knowledge.search` → `knowledge-search` (a step id is a DNS label)."""
    return tool.replace(".", "-").replace("_", "-").lower()[:40]


class ToolExecutionService:
    def __init__(self, runs: RunService, registry: ToolRegistry) -> None:
        self._runs = runs
        self._registry = registry

    async def execute(self, principal: Principal, tool: str, body: ToolExecuteIn) -> ToolExecution:
        spec = self._registry.get(tool)
        if spec is None:
            raise ToolNotFound(f"no tool named {tool!r} (GET /api/v1/tools lists them)")
        try:
            spec.params_model.model_validate(body.params)
        except ValidationError as exc:
            # 400 naming each offending field as params.<field>.
            raise from_validation_error(exc, prefix=("params",)) from exc
        step_id = step_id_for(tool)
        request = RunRequest(
            tenant=body.tenant,
            prompt=f"Execute {tool}",
            user=principal.user,
            options=RunOptions(max_steps=1),
            plan=[PlanStep(id=step_id, tool=ToolName(tool), params=dict(body.params))],
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
