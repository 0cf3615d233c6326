"""``task.create``: create a task in the tenant's task store, optionally deliver it.

The task is created by the gateway, keyed on the step (``<run-id>:<step-id>``), so every
attempt of the step gets the same task and only the first creates it (``created``).
Delivery to ``webhookUrl`` is a POST of the task as JSON, from this pod, through the
SSRF-safe client: the host must be on the tenant's egress allowlist and resolve to public
addresses only, redirects are not followed, and the request carries
``Idempotency-Key: <run-id>:<step-id>`` so the receiver can drop the repeats a retried step
sends. The destination is vetted BEFORE the task is created, so a webhook that can never be
allowed fails the step without a side effect.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sba_core.tools.builtin.task_create import TaskCreateParams, TaskCreateResult, TaskFields
from sba_tools.egress import raise_for_status
from sba_tools.errors import StepFailure
from sba_tools.gateway import TaskReceipt
from sba_tools.tools.base import ToolContext, ToolImplementation

WEBHOOK_TIMEOUT_SECONDS: Final = 15.0
WEBHOOK_MAX_RESPONSE_BYTES: Final = 64 * 1024


def webhook_payload(ctx: ToolContext, task: TaskReceipt) -> dict[str, Any]:
    return {
        "event": "task.created",
        "tenant": ctx.step.tenant,
        "runId": ctx.step.run_id,
        "stepId": ctx.step.step_id,
        "idempotencyKey": ctx.step.step_key,
        "task": {
            "id": task.task_id,
            "title": task.title,
            "description": task.description,
            "dueDate": task.due_date,
            "assignee": task.assignee,
        },
    }


def _title(ctx: ToolContext, params: TaskCreateParams) -> str | None:
    """The title a person gave in an earlier user.input step (params.titleFrom)."""
    if params.title_from is None:
        return None
    answer = ctx.step.inputs.get(params.title_from)
    value = answer.get("value") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise StepFailure(
            f"task.create: step {params.title_from!r} gave no title to use", retryable=False
        )
    return value.strip()[:200]


def run(ctx: ToolContext, params: TaskCreateParams) -> TaskCreateResult:
    allowlist = ctx.step.config.egress_allowlist
    if params.webhook_url is not None:
        ctx.http.check(params.webhook_url, allowlist)
    task = ctx.gateway.create_task(TaskFields.of(params, _title(ctx, params)))
    ctx.log.info("task.create.stored", taskId=task.task_id, created=task.created)
    delivered = False
    if params.webhook_url is not None:
        response = ctx.http.request(
            "POST",
            params.webhook_url,
            allowlist=allowlist,
            max_bytes=WEBHOOK_MAX_RESPONSE_BYTES,
            timeout=WEBHOOK_TIMEOUT_SECONDS,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": ctx.step.step_key,
            },
            body=json.dumps(webhook_payload(ctx, task), separators=(",", ":")).encode(),
        )
        raise_for_status("the task webhook", response)
        delivered = True
        ctx.log.info("task.create.delivered", taskId=task.task_id, status=response.status)
    return TaskCreateResult(task_id=task.task_id, created=task.created, delivered=delivered)


def summarize(result: TaskCreateResult) -> str:
    state = "created" if result.created else "already created by an earlier attempt"
    return f"task {result.task_id} {state}" + (", delivered" if result.delivered else "")


IMPLEMENTATION = ToolImplementation(params_type=TaskCreateParams, run=run, summarize=summarize)
