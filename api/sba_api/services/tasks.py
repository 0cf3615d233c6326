"""task.create through the gateway: one task per step, whatever the number of attempts."""

from __future__ import annotations

from uuid import UUID

from sba_api.errors import Conflict, Forbidden, NotFound
from sba_api.services._boundary import store_boundary
from sba_core.step_token import StepClaims
from sba_core.tools.contracts import (
    TaskCreated,
    TaskCreateParams,
    TaskFields,
    step_idempotency_key,
)
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolContractError
from sba_store.tasks import TaskRecord, TaskRepository
from sba_store.tool_calls import ToolCallRepository


class TaskStepNotFound(NotFound):
    code = "step_not_found"


class TaskMismatch(Conflict):
    code = "task_params_mismatch"


class TaskService:
    def __init__(self, tasks: TaskRepository, tool_calls: ToolCallRepository) -> None:
        self._tasks = tasks
        self._tool_calls = tool_calls

    async def create(self, claims: StepClaims, fields: TaskFields) -> TaskCreated:
        """Create the step's task, or return the one an earlier attempt created.

        The tenant, run and step come from the token; the task must be the one the
        step's recorded params describe (what was planned, and approved, is what is
        written).
        """
        if claims.tool != ToolName.TASK_CREATE:
            raise Forbidden(f"a {claims.tool!r} step may not create tasks")
        run_id = UUID(claims.run_id)
        with store_boundary("read the tool call"):
            call = await self._tool_calls.get(
                run_id, claims.step_id, claims.attempt, tenant_id=claims.tenant
            )
        if call is None or call.tool != claims.tool:
            raise TaskStepNotFound(
                f"no task.create call recorded for step {claims.step_id!r} attempt {claims.attempt}"
            )
        try:
            planned = TaskFields.of(TaskCreateParams.model_validate(call.params))
        except (ValueError, ToolContractError) as exc:
            raise Forbidden(f"the step's recorded params are not a task: {exc}") from exc
        if planned != fields:
            raise TaskMismatch("the task does not match the step's recorded params")
        with store_boundary("create the task"):
            task, created = await self._tasks.create(
                tenant_id=claims.tenant,
                idempotency_key=step_idempotency_key(claims.run_id, claims.step_id),
                run_id=run_id,
                step_id=claims.step_id,
                title=fields.title,
                description=fields.description,
                due_date=fields.due_date,
                assignee=fields.assignee,
            )
        return _view(task, created)


def _view(task: TaskRecord, created: bool) -> TaskCreated:
    return TaskCreated(
        task_id=str(task.id),
        created=created,
        idempotency_key=task.idempotency_key,
        run_id=str(task.run_id),
        step_id=task.step_id,
        title=task.title,
        description=task.description,
        due_date=task.due_date,
        assignee=task.assignee,
        created_at=task.created_at,
    )
