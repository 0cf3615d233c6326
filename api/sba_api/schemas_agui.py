"""The AG-UI 1.0 request body (`RunAgentInput`) as this API reads it.

AG-UI objects are open (unknown keys are kept by the protocol's own SDKs), so
these models ignore keys they do not know instead of refusing them; only what
the orchestrator acts on is typed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

AguiId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Open(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class AguiMessage(_Open):
    id: Annotated[str, StringConstraints(max_length=200)] | None = None
    role: str = Field(description="user, assistant, system, developer, tool, ...")
    content: str | list[dict[str, Any]] | None = Field(
        default=None, description="Text, or content parts (`{type: text, text}` are read)."
    )


class AguiResume(_Open):
    interrupt_id: AguiId = Field(
        description="The `id` of an interrupt from RUN_FINISHED.outcome.interrupts"
        " (`<run>:approval:<step>:<attempt>` or `<run>:input:<step>`)."
    )
    status: Literal["resolved", "cancelled"] = Field(
        description="`cancelled`: deny the approval, or cancel the run waiting for input."
    )
    payload: Any = Field(
        default=None,
        description="Approval: `{approved: bool, reason?}`. Input: `{input: string}` or a string.",
    )


class AguiRunInput(_Open):
    """AG-UI `RunAgentInput`: a new input starts a run; one with `resume` answers the
    interrupt that ended the thread's previous AG-UI run and continues it."""

    thread_id: AguiId
    run_id: AguiId | None = Field(
        default=None,
        description="The client's id for this AG-UI run; the same (threadId, runId) again"
        " streams the same run instead of starting another.",
    )
    parent_run_id: str | None = None
    protocol_version: str | None = None
    messages: list[AguiMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="Accepted and ignored: runs use the tenant's server tools."
    )
    state: Any = None
    context: list[dict[str, Any]] | None = None
    forwarded_props: dict[str, Any] | None = Field(
        default=None,
        description="Run terms passed through to POST /runs: tenant, options, plan, retry,"
        " deadlineSeconds, approvalPolicy.",
    )
    resume: list[AguiResume] | None = None


class AguiQuery(_Open):
    last_event_id: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None,
        description="Resume after this AG-UI event id (`<seq>.<n>`; for clients that cannot"
        " set headers).",
    )
