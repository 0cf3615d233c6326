"""What people do to a running run through the API: approve or deny a step, cancel, continue.

Each one becomes the same Kubernetes change kubectl users make (an `Approval`
object; a merge patch of `spec.cancel` or `spec.inputs`), made by the API's
identity — a member of `sba-agentic:delegating-approvers` — in the name of the
bearer token's user. The operator stays the one authority: it validates every
Approval (`sba_core.approvals.check_answer`, which this service also runs first
so obvious refusals need no object) and writes its verdict into the Approval's
status, which this service waits for briefly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from pydantic import ValidationError

from sba_api.errors import ApiError, BadRequest, Conflict, ErrorItem, Forbidden, NotFound
from sba_api.kube import KubeClient, PatchConflict
from sba_api.schemas import (
    ApprovalIn,
    ApprovalLinks,
    ApprovalView,
    CancelIn,
    ContinueIn,
    RunView,
)
from sba_api.services.audit import AuditService
from sba_api.services.runs import API_PREFIX, RunService
from sba_core import approvals as policy
from sba_core.auth.permissions import Principal
from sba_core.group import (
    API_VERSION,
    APPROVAL_KIND,
    LABEL_MANAGED_BY,
    LABEL_RUN_NAME,
    LABEL_RUN_UID,
    LABEL_TENANT,
    MANAGED_BY,
)
from sba_core.lifecycle import is_terminal
from sba_core.models.approval import ApprovalSpec, RejectReason
from sba_core.models.run import AgentRunStatus, RunPhase, StepPhase, StepStatus
from sba_core.tools.names import ToolName
from sba_store.records import RunRecord

log = logging.getLogger(__name__)

PATCH_ATTEMPTS: Final = 3
_NO_DIGEST: Final = "0" * 64


class StepNotFound(NotFound):
    code = "step_not_found"


class ApprovalRunNotFound(NotFound):
    code = "run_not_found"


class StepNotAwaitingApproval(Conflict):
    code = "step_not_awaiting_approval"


class AlreadyAnswered(Conflict):
    code = "already_answered"


class DigestMismatch(Conflict):
    code = "digest_mismatch"


class NotAnApprover(Forbidden):
    code = "not_an_approver"


class ApprovalInvalid(BadRequest):
    code = "approval_invalid"


class RunFinished(Conflict):
    code = "run_finished"


class RunAlreadyCancelled(Conflict):
    code = "run_already_cancelled"


class StepNotAwaitingInput(Conflict):
    code = "step_not_awaiting_input"


class InputAlreadyGiven(Conflict):
    code = "input_already_given"


class RunChanging(Conflict):
    code = "run_changed"


class RunIdMismatch(BadRequest):
    code = "validation_error"


# The operator's reasons (Approval status.reason) and the API's answers to them.
_REJECTIONS: Final[dict[str, type[ApiError]]] = {
    RejectReason.RUN_NOT_FOUND.value: ApprovalRunNotFound,
    RejectReason.STEP_NOT_FOUND.value: StepNotFound,
    RejectReason.NOT_WAITING.value: StepNotAwaitingApproval,
    RejectReason.ALREADY_ANSWERED.value: AlreadyAnswered,
    RejectReason.DIGEST_MISMATCH.value: DigestMismatch,
    RejectReason.NOT_AN_APPROVER.value: NotAnApprover,
}


def rejection(reason: str | None, message: str) -> ApiError:
    """The HTTP error for an Approval the operator (or the pre-check) rejected."""
    return _REJECTIONS.get(reason or "", ApprovalInvalid)(message)


def approval_links(run_id: str, name: str) -> ApprovalLinks:
    base = f"{API_PREFIX}/runs/{run_id}"
    return ApprovalLinks(self_=f"{base}/approvals/{name}", run=base, events=f"{base}/events")


def approval_name(run_name: str, step_id: str, seed: str | None) -> str:
    """`<run>-<step>-<10 hex>`: readable in `kubectl get apr`, unique per answer.

    With an Idempotency-Key the suffix derives from it, so a retry after a crash
    finds the Approval its first attempt created instead of answering twice.
    """
    suffix = (
        hashlib.sha256(seed.encode()).hexdigest()[:10] if seed is not None else uuid.uuid4().hex
    )[:10]
    return f"{run_name[:180]}-{step_id}-{suffix}"


def _parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def approval_view(run_id: str, obj: dict[str, Any]) -> ApprovalView:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = str(meta.get("name", ""))
    outcome = status.get("outcome")
    return ApprovalView(
        name=name,
        run_id=run_id,
        step_id=str(spec.get("stepId", "")),
        decision=spec.get("decision", "denied"),
        reason=spec.get("reason"),
        actor=str(spec.get("approver", "")),
        groups=[str(g) for g in spec.get("groups") or []],
        ts=_parse_time(meta.get("creationTimestamp")),
        outcome=outcome if outcome in ("accepted", "rejected") else "pending",
        outcome_reason=status.get("reason"),
        message=status.get("message"),
        links=approval_links(run_id, name),
    )


@dataclass(frozen=True)
class LiveRun:
    run_id: UUID
    record: RunRecord
    obj: dict[str, Any]
    status: AgentRunStatus

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.obj.get("spec") or {}
        return spec

    @property
    def resource_version(self) -> str:
        return str((self.obj.get("metadata") or {}).get("resourceVersion", ""))

    def step(self, step_id: str) -> StepStatus | None:
        return next((s for s in self.status.steps if s.id == step_id), None)


@dataclass(frozen=True)
class ApprovalAnswered:
    """The recorded answer and whether the operator had ruled on it in time."""

    view: ApprovalView

    @property
    def decided(self) -> bool:
        return self.view.outcome != "pending"


class RunActionService:
    def __init__(
        self,
        runs: RunService,
        kube: KubeClient,
        audit: AuditService,
        *,
        approval_wait_seconds: float,
        poll_seconds: float = 0.1,
    ) -> None:
        self._runs = runs
        self._kube = kube
        self._audit = audit
        self._wait = approval_wait_seconds
        self._poll = poll_seconds

    async def _live(self, principal: Principal, raw_id: str) -> LiveRun:
        """The run as the cluster has it now: 404/403 first, 409 when its AgentRun is gone."""
        run_id = await self._runs.authorize(principal, raw_id)
        record = await self._runs.record(run_id)
        obj = await self._kube.get_agent_run(record.namespace, record.name)
        if obj is None or (obj.get("metadata") or {}).get("uid") != str(run_id):
            raise RunFinished(f"run {run_id} has finished: its AgentRun no longer exists")
        try:
            status = AgentRunStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            log.warning("AgentRun of run %s has a status this API cannot parse", run_id)
            status = AgentRunStatus()
        return LiveRun(run_id, record, obj, status)

    # -- approvals --------------------------------------------------------------------------

    async def approve(
        self, principal: Principal, raw_id: str, body: ApprovalIn, *, seed: str | None = None
    ) -> ApprovalAnswered:
        """Record `principal`'s answer; raises the HTTP error of a rejected one.

        `seed` (the tenant and Idempotency-Key) names the Approval deterministically.
        """
        run = await self._live(principal, raw_id)
        if body.run_id is not None and body.run_id != str(run.run_id):
            raise RunIdMismatch(
                "runId does not match the run in the path",
                details=[ErrorItem(loc="runId", msg="must be the run in the path")],
            )
        step = run.step(body.step_id)
        if step is None and run.status.steps:
            raise StepNotFound(f"run {run.run_id} has no step {body.step_id!r}")
        request = step.approval if step is not None else None
        answer = ApprovalSpec(
            run=run.record.name,
            step_id=body.step_id,
            decision=body.approval.status,
            reason=body.approval.reason,
            approver=principal.user,
            groups=sorted(principal.groups),
            digest=request.digest if request is not None else _NO_DIGEST,
        )
        waiting = (
            step is not None
            and step.phase is StepPhase.AWAITING_APPROVAL
            and run.status.phase is RunPhase.AWAITING_APPROVAL
        )
        # The operator's own check, first: obvious refusals create no object.
        problem = policy.check_answer(request, answer, waiting=waiting)
        if problem is not None:
            reason, message = problem
            raise rejection(reason.value, message)
        name = approval_name(run.record.name, body.step_id, seed)
        manifest = {
            "apiVersion": API_VERSION,
            "kind": APPROVAL_KIND,
            "metadata": {
                "name": name,
                "namespace": run.record.namespace,
                "labels": {
                    LABEL_RUN_NAME: run.record.name[:63],
                    LABEL_RUN_UID: str(run.run_id),
                    LABEL_TENANT: run.record.tenant_id,
                    LABEL_MANAGED_BY: MANAGED_BY,
                },
            },
            "spec": answer.wire(),
        }
        obj, created = await self._kube.create_approval(run.record.namespace, manifest)
        if created:
            await self._audit.record(
                principal,
                tenant=run.record.tenant_id,
                action="run.approval_submitted",
                target=f"{run.record.namespace}/{run.record.name}",
                payload={
                    "runId": str(run.run_id),
                    "stepId": body.step_id,
                    "decision": str(body.approval.status),
                    "reason": body.approval.reason,
                    "approval": name,
                    "digest": answer.digest,
                },
            )
        view = await self._await_outcome(run, obj)
        if view.outcome == "rejected":
            raise rejection(view.outcome_reason, view.message or "the approval was rejected")
        return ApprovalAnswered(view)

    async def _await_outcome(self, run: LiveRun, obj: dict[str, Any]) -> ApprovalView:
        """Poll the Approval until the operator writes its outcome, or the wait is over."""
        run_id = str(run.run_id)
        view = approval_view(run_id, obj)
        deadline = time.monotonic() + self._wait
        while view.outcome == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(self._poll)
            current = await self._kube.get_approval(run.record.namespace, view.name)
            if current is None:
                break  # deleted meanwhile: report what we know
            view = approval_view(run_id, current)
        return view

    async def get_approval(self, principal: Principal, raw_id: str, name: str) -> ApprovalView:
        run_id = await self._runs.authorize(principal, raw_id)
        record = await self._runs.record(run_id)
        obj = await self._kube.get_approval(record.namespace, name)
        if obj is None or (obj.get("spec") or {}).get("run") != record.name:
            raise NotFound(f"run {run_id} has no approval {name!r}")
        return approval_view(str(run_id), obj)

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, principal: Principal, raw_id: str, body: CancelIn) -> RunView:
        """Set spec.cancel in the caller's name; the same request again changes nothing."""
        wanted: dict[str, Any] = {"requestedBy": principal.user}
        if body.reason is not None:
            wanted["reason"] = body.reason
        for _ in range(PATCH_ATTEMPTS):
            run = await self._live(principal, raw_id)
            existing = run.spec.get("cancel")
            if existing:
                if existing == wanted:
                    return self._runs.view_of(run.record, run.obj)  # a replay: already done
                raise RunAlreadyCancelled(
                    f"run {run.run_id} was already cancelled by"
                    f" {existing.get('requestedBy') or 'someone else'}"
                )
            if is_terminal(run.status.phase):
                raise RunFinished(f"run {run.run_id} has already {run.status.phase}")
            patch = {
                "metadata": {"resourceVersion": run.resource_version},
                "spec": {"cancel": wanted},
            }
            try:
                patched = await self._kube.patch_agent_run(
                    run.record.namespace, run.record.name, patch
                )
            except PatchConflict as exc:
                if exc.status == 409:
                    continue  # changed since we read it: decide again
                raise RunAlreadyCancelled(f"the cluster refused the cancel: {exc.message}") from exc
            if patched is None:
                raise RunFinished(f"run {run.run_id} has finished: its AgentRun no longer exists")
            await self._audit.record(
                principal,
                tenant=run.record.tenant_id,
                action="run.cancel_requested",
                target=f"{run.record.namespace}/{run.record.name}",
                payload={"runId": str(run.run_id), "reason": body.reason},
            )
            return self._runs.view_of(run.record, patched)
        raise RunChanging("the run kept changing while cancelling it; retry")

    # -- continue ---------------------------------------------------------------------------

    async def continue_run(self, principal: Principal, raw_id: str, body: ContinueIn) -> RunView:
        """Give a waiting `user.input` step its input (spec.inputs[stepId])."""
        for _ in range(PATCH_ATTEMPTS):
            run = await self._live(principal, raw_id)
            step = run.step(body.step_id)
            if step is None and run.status.steps:
                raise StepNotFound(f"run {run.run_id} has no step {body.step_id!r}")
            inputs = run.spec.get("inputs") or {}
            if body.step_id in inputs:
                raise InputAlreadyGiven(f"step {body.step_id!r} already has its input")
            if (
                step is None
                or step.tool != ToolName.USER_INPUT.value
                or step.phase is not StepPhase.AWAITING_INPUT
                or is_terminal(run.status.phase)
            ):
                where = "not planned yet" if step is None else f"{step.phase} ({step.tool})"
                raise StepNotAwaitingInput(
                    f"step {body.step_id!r} is not waiting for input: {where};"
                    f" the run is {run.status.phase}"
                )
            patch = {
                "metadata": {"resourceVersion": run.resource_version},
                "spec": {"inputs": {body.step_id: body.input}},
            }
            try:
                patched = await self._kube.patch_agent_run(
                    run.record.namespace, run.record.name, patch
                )
            except PatchConflict as exc:
                if exc.status == 409:
                    continue
                raise InputAlreadyGiven(f"the cluster refused the input: {exc.message}") from exc
            if patched is None:
                raise RunFinished(f"run {run.run_id} has finished: its AgentRun no longer exists")
            await self._audit.record(
                principal,
                tenant=run.record.tenant_id,
                action="run.input_provided",
                target=f"{run.record.namespace}/{run.record.name}",
                payload={"runId": str(run.run_id), "stepId": body.step_id},
            )
            return self._runs.view_of(run.record, patched)
        raise RunChanging("the run kept changing while continuing it; retry")
