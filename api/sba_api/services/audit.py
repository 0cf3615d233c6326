"""Reading the audit log, and appending the API's own entries."""

from __future__ import annotations

import logging
from typing import Any

from sba_api.context import current_request_id
from sba_api.errors import BadRequest, ErrorItem
from sba_api.schemas import AuditEntry, AuditList, AuditQuery
from sba_api.services._boundary import store_boundary
from sba_api.services.access import scope_tenant
from sba_core.auth.permissions import Principal
from sba_store.audit import AuditRepository

log = logging.getLogger(__name__)


class InvalidAuditCursor(BadRequest):
    code = "invalid_cursor"


class AuditService:
    def __init__(self, audit: AuditRepository) -> None:
        self._audit = audit

    async def list(self, principal: Principal, query: AuditQuery) -> AuditList:
        tenant = scope_tenant(principal, query.tenant)
        before: int | None = None
        if query.cursor is not None:
            try:
                before = int(query.cursor)
                if not 0 < before < 2**63 or not query.cursor.isdigit():
                    raise ValueError(query.cursor)
            except ValueError as exc:
                raise InvalidAuditCursor(
                    "the cursor is not one this API returned",
                    details=[ErrorItem(loc="cursor", msg="invalid cursor")],
                ) from exc
        with store_boundary("read the audit log"):
            records = await self._audit.list_page(
                tenant,
                limit=query.limit + 1,
                before_id=before,
                action=query.action,
                actor=query.actor,
                since=query.since,
                until=query.until,
            )
        page = records[: query.limit]
        return AuditList(
            items=[
                AuditEntry(
                    id=r.id,
                    tenant=r.tenant_id,
                    actor=r.actor,
                    action=r.action,
                    target=r.target,
                    request_id=r.request_id,
                    payload=r.payload,
                    created_at=r.created_at,
                )
                for r in page
            ],
            next_cursor=str(page[-1].id) if len(records) > query.limit else None,
        )

    async def record(
        self,
        principal: Principal,
        *,
        tenant: str,
        action: str,
        target: str,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Append an entry for a change the API made; the change stands if this fails."""
        try:
            await self._audit.append(
                tenant_id=tenant,
                actor=principal.user,
                action=action,
                target=target,
                request_id=current_request_id(),
                payload={"actorTenant": principal.tenant, **(payload or {})},
            )
        except Exception:
            log.warning("could not audit %s of %s", action, target, exc_info=True)
