"""``crm.sync``: upsert contacts and deals into the deployment's CRM.

The endpoint is the API's ``SBA_CRM_URL``, handed over in the step envelope
(``config.crmUrl``); it is deployment configuration, not tenant input, so it needs no
allowlist entry and may be in-cluster, but it may never be link-local (cloud metadata),
and redirects are not followed.

Wire contract with the CRM (or the adapter in front of it)::

    POST <crmUrl>
    Content-Type: application/json
    Idempotency-Key: <run-id>:<step-id>      (the same for every attempt of the step)
    X-SBA-Tenant, X-SBA-Run-Id, X-SBA-Step-Id
    {"mode": "upsert", "tenant", "runId", "stepId", "idempotencyKey",
     "contacts": [{"email", "name"?, "company"?}], "deals": [{"name", "amount", "stage"}],
     "scope"?: ["contacts", "deals"]}

With a ``scope`` and no records, the CRM connector syncs the tenant's records of those
kinds that changed since its last sync (the body, and so the replay, is the same for
every attempt).

    2xx, optionally {"remoteId" (or "id"): str, "synced": {"contacts": n, "deals": n}}

A CRM must treat a repeated Idempotency-Key as a replay of the first request. 4xx (but
408/429) fails the step permanently; 5xx, 408, 429, timeouts and connection errors are
retryable, and the retry sends the same key.
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import ValidationError

from sba_core.tools.builtin.crm_sync import CrmSyncCounts, CrmSyncParams, CrmSyncResult
from sba_tools.egress import deployment_configured, raise_for_status
from sba_tools.errors import StepFailure
from sba_tools.tools.base import ToolContext, ToolImplementation

CRM_TIMEOUT_SECONDS: Final = 30.0
CRM_MAX_RESPONSE_BYTES: Final = 256 * 1024


def request_body(ctx: ToolContext, params: CrmSyncParams) -> dict[str, Any]:
    return {
        "mode": str(params.mode),
        "tenant": ctx.step.tenant,
        "runId": ctx.step.run_id,
        "stepId": ctx.step.step_id,
        "idempotencyKey": ctx.step.step_key,
        "contacts": [contact.wire() for contact in params.contacts],
        "deals": [deal.wire() for deal in params.deals],
        **({"scope": [str(s) for s in params.scope]} if params.scope else {}),
    }


def parse_answer(body: bytes, params: CrmSyncParams) -> CrmSyncResult:
    """The CRM's counts and id when it states them, else what was sent."""
    sent = CrmSyncCounts(contacts=len(params.contacts), deals=len(params.deals))
    # A scope-only sync sends no records: only the CRM's answer says what it synced.
    try:
        answer = json.loads(body) if body.strip() else {}
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    remote = answer.get("remoteId", answer.get("id"))
    remote_id = str(remote)[:200] if isinstance(remote, str | int) and remote != "" else None
    try:
        synced = CrmSyncCounts.model_validate(answer["synced"]) if "synced" in answer else sent
    except ValidationError:
        synced = sent
    return CrmSyncResult(synced=synced, remote_id=remote_id)


def run(ctx: ToolContext, params: CrmSyncParams) -> CrmSyncResult:
    url = ctx.step.config.crm_url
    if not url:
        raise StepFailure("crm.sync is not configured: the API has no SBA_CRM_URL", retryable=False)
    key = ctx.step.step_key
    response = ctx.http.request(
        "POST",
        url,
        allowlist=None,
        policy=deployment_configured,
        max_bytes=CRM_MAX_RESPONSE_BYTES,
        timeout=CRM_TIMEOUT_SECONDS,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": key,
            "X-SBA-Tenant": ctx.step.tenant,
            "X-SBA-Run-Id": ctx.step.run_id,
            "X-SBA-Step-Id": ctx.step.step_id,
        },
        body=json.dumps(request_body(ctx, params), separators=(",", ":")).encode(),
    )
    raise_for_status("the CRM", response)
    result = parse_answer(response.body, params)
    ctx.log.info(
        "crm.sync.done",
        status=response.status,
        contacts=result.synced.contacts,
        deals=result.synced.deals,
        remoteId=result.remote_id,
    )
    return result


def summarize(result: CrmSyncResult) -> str:
    remote = f" (remote {result.remote_id})" if result.remote_id else ""
    return f"synced {result.synced.contacts} contact(s) and {result.synced.deals} deal(s){remote}"


IMPLEMENTATION = ToolImplementation(params_type=CrmSyncParams, run=run, summarize=summarize)
