"""Creating, reading and listing runs."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from sba_api.bounded_map import BoundedMap
from sba_api.context import current_request_id, note_request
from sba_api.errors import BadRequest, ErrorItem, NotFound, ServiceUnavailable, UpstreamError
from sba_api.kube import KubeClient
from sba_api.schemas import RunCreated, RunLinks, RunList, RunSummary, RunView
from sba_api.services._boundary import store_boundary
from sba_api.services.access import check_tenant
from sba_api.services.tool_catalog import ToolCatalogService
from sba_core.auth.permissions import Principal
from sba_core.group import (
    AGENTRUN_KIND,
    API_VERSION,
    LABEL_MANAGED_BY,
    LABEL_TENANT,
    MANAGED_BY,
    tenant_namespace,
)
from sba_core.models.run import AgentRunStatus, RunPhase, RunRequest
from sba_core.planning import PlanningError, explicit_steps
from sba_core.tools.catalog import validate_plan
from sba_store.audit import AuditRepository
from sba_store.records import RunRecord
from sba_store.runs import RunRepository
from sba_telemetry import TRACEPARENT_ANNOTATION, current_traceparent

log = logging.getLogger(__name__)

MAX_REMEMBERED_RUNS = 50_000

API_PREFIX = "/api/v1"


class RunNotFound(NotFound):
    code = "run_not_found"


class InvalidPlan(BadRequest):
    code = "invalid_plan"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


def run_links(run_id: str) -> RunLinks:
    base = f"{API_PREFIX}/runs/{run_id}"
    return RunLinks(self_=base, events=f"{base}/events", artifacts=f"{base}/artifacts")


def parse_run_id(raw: str) -> UUID:
    """A run id from a URL; anything that is not a uuid is an unknown run."""
    try:
        return UUID(raw)
    except ValueError as exc:
        raise RunNotFound(f"run {raw!r} not found") from exc


def encode_cursor(created_at: datetime, run_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(run_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), UUID(run_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor(
            "the cursor is not one this API returned",
            details=[ErrorItem(loc="cursor", msg="invalid cursor")],
        ) from exc


class RunService:
    def __init__(
        self,
        runs: RunRepository,
        kube: KubeClient,
        tools: ToolCatalogService,
        audit: AuditRepository | None = None,
    ) -> None:
        self._runs = runs
        self._kube = kube
        self._tools = tools
        self._owners = BoundedMap[UUID, str](MAX_REMEMBERED_RUNS)
        """run id -> its tenant: fixed at creation, so learnt once per process."""
        self._records = BoundedMap[UUID, RunRecord](MAX_REMEMBERED_RUNS)
        """Run rows as last read: their fixed fields back a view of the live AgentRun."""
        self._audit = audit

    @property
    def tools(self) -> ToolCatalogService:
        return self._tools

    async def check_plan(self, spec: RunRequest) -> None:
        """Refuse an explicit plan the operator would fail, before anything is created."""
        if not spec.plan:
            return
        steps = explicit_steps(spec.plan)
        namespace = tenant_namespace(spec.tenant)
        catalog = await self._tools.catalog_for(namespace, need=[s.tool for s in steps])
        try:
            validate_plan(catalog, namespace, steps, spec.options.max_steps)
        except PlanningError as exc:
            raise InvalidPlan(str(exc), details=[ErrorItem(loc="plan", msg=str(exc))]) from exc

    async def create(self, spec: RunRequest) -> RunCreated:
        await self.check_plan(spec)
        namespace = tenant_namespace(spec.tenant)
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": AGENTRUN_KIND,
            "metadata": {
                "generateName": "run-",
                "namespace": namespace,
                "labels": {LABEL_TENANT: spec.tenant, LABEL_MANAGED_BY: MANAGED_BY},
            },
            "spec": spec.wire(),
        }
        traceparent = current_traceparent()
        if traceparent:
            # The operator continues this request's trace for its reconciles of the run.
            body["metadata"]["annotations"] = {TRACEPARENT_ANNOTATION: traceparent}
        created = await self._kube.create_agent_run(namespace, body)
        metadata = created.get("metadata") or {}
        uid, name = metadata.get("uid"), metadata.get("name")
        if not isinstance(uid, str) or not isinstance(name, str):
            raise UpstreamError("Kubernetes returned an AgentRun without uid or name")
        note_request(tenant_id=spec.tenant, run_id=uid)
        try:
            with store_boundary("record the run"):
                await self._runs.upsert(
                    run_id=UUID(uid),
                    tenant_id=spec.tenant,
                    namespace=namespace,
                    name=name,
                    prompt=spec.prompt,
                    spec=spec.wire(),
                    user_id=spec.user,
                )
        except Exception:
            # Without its row the client could never find the run: take it back.
            log.warning("recording run %s/%s failed; deleting the AgentRun", namespace, name)
            try:
                await self._kube.delete_agent_run(namespace, name)
            except Exception:
                log.exception("could not delete AgentRun %s/%s", namespace, name)
            raise
        await self._record_audit(spec, namespace, name, uid)
        return RunCreated(
            id=uid,
            name=name,
            namespace=namespace,
            tenant=spec.tenant,
            phase=RunPhase.PENDING.value,
            links=run_links(uid),
        )

    async def _record_audit(self, spec: RunRequest, namespace: str, name: str, uid: str) -> None:
        """Best effort: the run exists whatever happens here, so a failure is only logged."""
        if self._audit is None:
            return
        try:
            await self._audit.append(
                tenant_id=spec.tenant,
                actor=spec.user or "anonymous",
                action="run.create",
                target=f"{namespace}/{name}",
                request_id=current_request_id(),
                payload={"runId": uid},
            )
        except Exception:
            log.warning("could not audit the creation of run %s", uid, exc_info=True)

    async def authorize(self, principal: Principal, raw_id: str) -> UUID:
        """The run's id if the principal may see it: 404 when unknown, 403 for another tenant's."""
        run_id = parse_run_id(raw_id)
        owner = await self._owner(run_id)
        if owner is None:
            raise RunNotFound(f"run {raw_id} not found")
        check_tenant(principal, owner)
        return run_id

    async def _owner(self, run_id: UUID) -> str | None:
        known = self._owners.get(run_id)
        if known is not None:
            return known
        with store_boundary("read the run"):
            owner = await self._runs.owner(run_id)  # run_owner(): no row read, RLS intact
        if owner is not None:  # only a found owner is remembered: an unknown run may appear
            self._owners.put(run_id, owner)
        return owner

    async def record(self, run_id: UUID) -> RunRecord:
        owner = await self._owner(run_id)
        with store_boundary("read the run"):
            # RLS: the row is read under its owner's tenant, learnt through run_owner().
            record = None if owner is None else await self._runs.get(run_id, tenant_id=owner)
        if record is None:
            raise RunNotFound(f"run {run_id} not found")
        self._records.put(run_id, record)
        return record

    async def get(self, raw_id: str) -> RunView:
        run_id = parse_run_id(raw_id)
        remembered = self._records.get(run_id)
        if remembered is not None:
            # The live AgentRun carries every field that changes; the row only the fixed
            # ones. Without the AgentRun the row speaks, so it is read afresh then.
            try:
                live = await self._kube.read_agent_run(remembered.namespace, remembered.name)
            except (ServiceUnavailable, UpstreamError):
                live = None  # the full path below answers from the database
            if live is not None and (live.get("metadata") or {}).get("uid") == str(run_id):
                return _view(remembered, live)
        record = await self.record(run_id)
        try:
            live = await self._kube.read_agent_run(record.namespace, record.name)
        except (ServiceUnavailable, UpstreamError) as exc:
            # Reads stay available when the cluster is not: answer from the database.
            log.warning("cannot read AgentRun of run %s: %s", record.id, exc.message)
            live = None
        if live is not None and (live.get("metadata") or {}).get("uid") != str(record.id):
            live = None  # a different object reusing the name: ours is gone
        return _view(record, live)

    def view_of(self, record: RunRecord, live: dict[str, Any] | None) -> RunView:
        """The run as `get` shows it, from an AgentRun object already in hand."""
        return _view(record, live)

    async def list_runs(self, tenant: str, *, limit: int, cursor: str | None) -> RunList:
        before = decode_cursor(cursor) if cursor else None
        with store_boundary("list runs"):
            records = await self._runs.list_for_tenant(tenant, limit=limit + 1, before=before)
        page = records[:limit]
        next_cursor = (
            encode_cursor(page[-1].created_at, page[-1].id) if len(records) > limit else None
        )
        return RunList(items=[_summary(r) for r in page], next_cursor=next_cursor)


def _summary(record: RunRecord) -> RunSummary:
    run_id = str(record.id)
    return RunSummary(
        id=run_id,
        name=record.name,
        namespace=record.namespace,
        tenant=record.tenant_id,
        phase=record.phase,
        prompt=record.prompt,
        user=record.user_id,
        created_at=record.created_at,
        finished_at=record.finished_at,
        links=run_links(run_id),
    )


def _view(record: RunRecord, live: dict[str, Any] | None) -> RunView:
    run_id = str(record.id)
    base: dict[str, Any] = {
        "id": run_id,
        "name": record.name,
        "namespace": record.namespace,
        "tenant": record.tenant_id,
        "prompt": record.prompt,
        "user": record.user_id,
        "phase": record.phase,
        "spec": record.spec,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "links": run_links(run_id),
        "source": "database",
    }
    if live is None:
        return RunView(**base)
    raw_status = live.get("status") or {}
    try:
        status = AgentRunStatus.model_validate(raw_status)
    except ValidationError:
        # The operator wrote something newer than this API understands: show what we can.
        log.warning("AgentRun %s has a status this API cannot parse", run_id, exc_info=True)
        phase = raw_status.get("phase")
        base.update(source="cluster", phase=phase if isinstance(phase, str) else record.phase)
        return RunView(**base)
    base.update(
        source="cluster",
        phase=status.phase.value,
        current_step=status.current_step,
        steps=status.steps,
        conditions=status.conditions,
        usage=status.usage,
        result=status.result,
        reason=status.reason,
        message=status.message,
        started_at=status.started_at,
        finished_at=status.finished_at or record.finished_at,
        spec=live.get("spec") or record.spec,
    )
    return RunView(**base)
