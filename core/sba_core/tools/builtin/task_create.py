"""task.create: params, the task as posted to the gateway, its answer, and the result."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from sba_core.models.base import WireModel
from sba_core.tools.builtin.common import HttpUrl


class TaskCreateParams(WireModel):
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(default=None, description="The task's title (or give titleFrom).")
    title_from: (
        Annotated[
            str,
            StringConstraints(
                min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="An earlier user.input step whose answer is the title (the planner asks"
        " for a title it could not find in the prompt).",
    )
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    due_date: date | None = None
    assignee: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    webhook_url: HttpUrl | None = Field(
        default=None,
        description="Deliver the created task here (POST, JSON); must be on the tenant's "
        "egress allowlist.",
    )

    @model_validator(mode="after")
    def _one_title(self) -> TaskCreateParams:
        if (self.title is None) == (self.title_from is None):
            raise ValueError("give exactly one of title and titleFrom")
        return self


class TaskFields(WireModel):
    """The task itself, as the tool posts it to the gateway (no delivery options)."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    due_date: date | None = None
    assignee: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @classmethod
    def of(cls, params: TaskCreateParams, title: str | None = None) -> TaskFields:
        """The task to create; `title` is the resolved one when params name `titleFrom`."""
        return cls(
            title=title or params.title or "",
            description=params.description,
            due_date=params.due_date,
            assignee=params.assignee,
        )


class TaskCreated(WireModel):
    """The gateway's answer to POST /internal/v1/tasks (201 created, 200 replay)."""

    task_id: str
    created: bool
    idempotency_key: str
    run_id: str
    step_id: str
    title: str
    description: str | None = None
    due_date: date | None = None
    assignee: str | None = None
    created_at: datetime


class TaskCreateResult(WireModel):
    task_id: str
    created: bool = Field(description="False when an earlier attempt already created it.")
    delivered: bool = Field(description="Whether the task was delivered to webhookUrl.")
