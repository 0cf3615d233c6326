"""AG-UI: start a run from a RunAgentInput, resume an interrupted one, and name its segments.

A new input becomes `RunService.create` (the path of POST /runs); a `resume`
answers the interrupt through `RunActionService` (the path of POST
/runs/{id}/approvals and /continue). Which of our runs an AG-UI (threadId,
runId) means is kept in `agui_runs` (sba_store.agui), so a retried input
streams the same run instead of starting another.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from pydantic import ValidationError

from sba_api.errors import (
    BadRequest,
    Conflict,
    ErrorItem,
    Forbidden,
    ServiceUnavailable,
    from_validation_error,
)
from sba_api.schemas import ApprovalAnswer, ApprovalIn, CancelIn, ContinueIn
from sba_api.schemas_agui import AguiResume, AguiRunInput
from sba_api.services._boundary import store_boundary
from sba_api.services.access import scope_tenant
from sba_api.services.run_actions import RunActionService
from sba_api.services.runs import RunService
from sba_core.agui import AguiEncoder, parse_interrupt_id
from sba_core.auth.permissions import Permission, Principal
from sba_core.events import EventType
from sba_core.models.approval import Decision
from sba_core.models.run import RunRequest
from sba_store.agui import AguiRunRepository
from sba_store.events import EventRepository

log = logging.getLogger(__name__)

# forwardedProps keys passed on to the run's terms (everything else is ignored).
RUN_PROPS: Final = ("tenant", "options", "plan", "retry", "deadlineSeconds", "approvalPolicy")
INTERRUPT_EVENTS: Final = frozenset({EventType.AWAITING_APPROVAL, EventType.AWAITING_INPUT})
_PAGE: Final = 500


class NoUserMessage(BadRequest):
    code = "validation_error"


class InvalidResume(BadRequest):
    code = "invalid_resume"


class ThreadMismatch(Conflict):
    code = "thread_mismatch"


def _require(who: Principal, permission: Permission) -> None:
    """POST /agui needs runs:create; answering through it needs what the REST route needs."""
    if not who.can(permission):
        raise Forbidden(f"this resume needs the {permission.value} permission")


@dataclass(frozen=True)
class AguiStart:
    """What to stream: run `run_id`, from the start of AG-UI segment `segment`."""

    run_id: UUID
    tenant: str
    segment: int


def last_user_text(body: AguiRunInput) -> str | None:
    for message in reversed(body.messages):
        if message.role != "user":
            continue
        if isinstance(message.content, str):
            return message.content.strip() or None
        if isinstance(message.content, list):
            parts = [
                str(p.get("text", ""))
                for p in message.content
                if isinstance(p, dict) and p.get("type") == "text"
            ]
            return "\n".join(parts).strip() or None
    return None


def _approval_answer(entry: AguiResume) -> ApprovalAnswer:
    payload = entry.payload
    if entry.status == "cancelled":
        return ApprovalAnswer(status=Decision.DENIED, reason="cancelled by the AG-UI client")
    reason: Any = None
    if isinstance(payload, bool):
        approved = payload
    elif isinstance(payload, Mapping) and isinstance(payload.get("approved"), bool):
        approved, reason = payload["approved"], payload.get("reason")
    elif isinstance(payload, Mapping) and payload.get("decision") in ("approved", "denied"):
        approved, reason = payload["decision"] == "approved", payload.get("reason")
    else:
        raise InvalidResume(
            "an approval's resume payload must be {approved: true|false, reason?}",
            details=[ErrorItem(loc="resume.0.payload", msg="expected {approved: bool}")],
        )
    try:
        return ApprovalAnswer(
            status=Decision.APPROVED if approved else Decision.DENIED,
            reason=str(reason) if reason is not None else None,
        )
    except ValidationError as exc:
        raise from_validation_error(exc, prefix=("resume", "0", "payload")) from exc


def _input_value(entry: AguiResume) -> str:
    payload = entry.payload
    if isinstance(payload, str):
        return payload
    if isinstance(payload, Mapping) and isinstance(payload.get("input"), str):
        return str(payload["input"])
    raise InvalidResume(
        "an input's resume payload must be a string or {input: string}",
        details=[ErrorItem(loc="resume.0.payload", msg="expected {input: string}")],
    )


class AguiService:
    def __init__(
        self,
        runs: RunService,
        actions: RunActionService | None,
        repo: AguiRunRepository,
        events: EventRepository,
    ) -> None:
        self._runs = runs
        self._actions = actions
        self._repo = repo
        self._events = events

    # -- naming -----------------------------------------------------------------------------

    async def names(self, run_id: UUID, tenant: str) -> tuple[str, dict[int, str]]:
        """The run's AG-UI threadId and runId per segment (the run's uid when it was not
        started through AG-UI)."""
        with store_boundary("read the run's AG-UI thread"):
            rows = await self._repo.for_run(run_id, tenant_id=tenant)
        thread = rows[0].thread_id if rows else str(run_id)
        return thread, {r.segment: r.agui_run_id for r in rows}

    async def _fold(self, run_id: UUID, tenant: str) -> AguiEncoder:
        """The encoder after every event so far (where the run stands, AG-UI-wise)."""
        encoder = AguiEncoder(str(run_id), "")
        after = 0
        while True:
            with store_boundary("read run events"):
                page = await self._events.list_after(run_id, after, _PAGE, tenant_id=tenant)
            for record in page:
                encoder.encode(record.seq, record.type, record.payload, record.ts)
                after = record.seq
            if len(page) < _PAGE:
                return encoder

    # -- start ------------------------------------------------------------------------------

    async def start(
        self, who: Principal, body: AguiRunInput, *, idempotency_key: str | None = None
    ) -> AguiStart:
        """The run (and segment) this input means: found, created, or resumed."""
        agui_run_id = body.run_id
        if agui_run_id is None and idempotency_key is not None:
            # No runId but a key: a retry with the key must find the same run.
            agui_run_id = "key-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        props = body.forwarded_props or {}
        tenant = scope_tenant(who, props.get("tenant") if isinstance(props, dict) else None)
        if agui_run_id is not None:
            with store_boundary("read the AG-UI thread"):
                known = await self._repo.get(tenant, body.thread_id, agui_run_id)
            if known is not None:
                return AguiStart(known.run_id, tenant, known.segment)
        if body.resume:
            return await self._resume(who, tenant, body, agui_run_id)
        return await self._create(who, tenant, body, agui_run_id)

    async def _create(
        self, who: Principal, tenant: str, body: AguiRunInput, agui_run_id: str | None
    ) -> AguiStart:
        prompt = last_user_text(body)
        if prompt is None:
            raise NoUserMessage(
                "messages hold no user message with text: the last one is the run's prompt",
                details=[ErrorItem(loc="messages", msg="no user message")],
            )
        props = body.forwarded_props or {}
        terms: dict[str, Any] = {k: props[k] for k in RUN_PROPS if k in props}
        terms.update(tenant=tenant, prompt=prompt, user=who.user)
        try:
            spec = RunRequest.model_validate(terms)
        except ValidationError as exc:
            raise from_validation_error(exc, prefix=("forwardedProps",)) from exc
        created = await self._runs.create(spec)
        run_id = UUID(created.id)
        with store_boundary("record the AG-UI thread"):
            row = await self._repo.add(tenant, body.thread_id, agui_run_id or created.id, run_id, 0)
        if row.run_id != run_id:
            # A concurrent request with the same (threadId, runId) won; stream its run.
            log.warning(
                "AG-UI run %s of thread %s raced; run %s is extra",
                agui_run_id,
                body.thread_id,
                run_id,
            )
            return AguiStart(row.run_id, tenant, row.segment)
        return AguiStart(run_id, tenant, 0)

    async def _resume(
        self, who: Principal, tenant: str, body: AguiRunInput, agui_run_id: str | None
    ) -> AguiStart:
        if self._actions is None:
            raise ServiceUnavailable("run actions are not available in this API process")
        assert body.resume
        if len(body.resume) != 1:
            raise InvalidResume(
                "a run waits for one answer at a time: send exactly one resume entry",
                details=[ErrorItem(loc="resume", msg="expected one entry")],
            )
        entry = body.resume[0]
        ref = parse_interrupt_id(entry.interrupt_id)
        if ref is None:
            raise InvalidResume(
                f"interruptId {entry.interrupt_id!r} is not an interrupt this API issued",
                details=[ErrorItem(loc="resume.0.interruptId", msg="unknown interrupt")],
            )
        run_id = await self._runs.authorize(who, ref.run_uid)
        thread, _ = await self.names(run_id, tenant)
        if thread != body.thread_id and thread != str(run_id):
            raise ThreadMismatch(
                f"run {run_id} belongs to thread {thread!r}, not {body.thread_id!r}"
            )
        folded = await self._fold(run_id, tenant)
        segment = folded.segment + 1 if folded.interrupted else folded.segment
        seed = f"{tenant}\nagui:{body.thread_id}:{agui_run_id or entry.interrupt_id}"
        if ref.kind == "approval":
            _require(who, Permission.RUNS_APPROVE)
            answer = ApprovalIn(step_id=ref.step_id, approval=_approval_answer(entry))
            await self._actions.approve(who, str(run_id), answer, seed=seed)
        elif entry.status == "cancelled":
            _require(who, Permission.RUNS_CANCEL)
            await self._actions.cancel(
                who, str(run_id), CancelIn(reason="input cancelled by the AG-UI client")
            )
        else:
            _require(who, Permission.RUNS_CONTINUE)
            try:
                given = ContinueIn(step_id=ref.step_id, input=_input_value(entry))
            except ValidationError as exc:
                raise from_validation_error(exc, prefix=("resume", "0", "payload")) from exc
            await self._actions.continue_run(who, str(run_id), given)
        if agui_run_id is not None:
            with store_boundary("record the AG-UI thread"):
                await self._repo.add(tenant, body.thread_id, agui_run_id, run_id, segment)
        return AguiStart(run_id, tenant, segment)
