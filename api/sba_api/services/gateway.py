"""The internal tool gateway: what a tool pod may do with its step token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from uuid import UUID

from sba_api.errors import ErrorItem, Forbidden, NotFound, Unauthorized, Unprocessable
from sba_api.schemas import ArtifactUploaded, StepInput, StepResultIn, StepResultRecorded
from sba_api.services._boundary import store_boundary
from sba_api.services.artifacts import ArtifactService
from sba_api.services.knowledge import KnowledgeService
from sba_api.services.step_config import StepConfigSource
from sba_api.services.tool_catalog import ToolCatalogService
from sba_core.step_token import InvalidStepToken, StepClaims, verify_step_token
from sba_core.tools.contracts import (
    KnowledgeSearchParams,
    KnowledgeSearchResult,
    StepConfig,
    step_idempotency_key,
)
from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolContractError, ToolRegistry, ToolSpec
from sba_store.audit import AuditRepository
from sba_store.records import ToolCallRecord
from sba_store.tool_calls import ToolCallRepository

CONTRACT_VIOLATION: Final = "result contract violation: "
SCOPE_WRITE_ARTIFACTS: Final = "write:artifacts"


class InvalidToken(Unauthorized):
    code = "invalid_step_token"


class StepNotFound(NotFound):
    code = "step_not_found"


class ResultContractViolation(Unprocessable):
    code = "result_contract_violation"


class GatewayService:
    def __init__(
        self,
        secret: str,
        tool_calls: ToolCallRepository,
        tools: ToolCatalogService,
        knowledge: KnowledgeService,
        artifacts: ArtifactService,
        *,
        step_config: StepConfigSource | None = None,
        audit: AuditRepository | None = None,
    ) -> None:
        self._step_config = step_config
        self._audit = audit
        self._secret = secret
        self._tool_calls = tool_calls
        self._tools = tools
        self._knowledge = knowledge
        self._artifacts = artifacts

    def authenticate(self, token: str | None) -> StepClaims:
        if not token:
            raise InvalidToken("a step token is required (Authorization: Bearer <token>)")
        try:
            claims = verify_step_token(self._secret, token)
            UUID(claims.run_id)
        except (InvalidStepToken, ValueError) as exc:
            raise InvalidToken(f"invalid step token: {exc}") from exc
        return claims

    async def _spec(self, claims: StepClaims) -> ToolSpec:
        registry = await self._tools.registry_for(claims.namespace, need=[claims.tool])
        spec = registry.get(claims.tool)
        if spec is None:
            raise Forbidden(f"the token's tool {claims.tool!r} is not registered")
        return spec

    def _require_tool(self, claims: StepClaims, tool: str) -> None:
        if claims.tool != tool:
            raise Forbidden(f"a {claims.tool!r} step may not call {tool!r}")

    async def _call(self, claims: StepClaims) -> ToolCallRecord:
        with store_boundary("read the tool call"):
            call = await self._tool_calls.get(
                UUID(claims.run_id), claims.step_id, claims.attempt, tenant_id=claims.tenant
            )
        if call is None:
            raise StepNotFound(
                f"no tool call recorded for step {claims.step_id!r} attempt {claims.attempt}"
            )
        if call.tool != claims.tool:
            raise Forbidden(f"step {claims.step_id!r} runs {call.tool!r}, not {claims.tool!r}")
        return call

    async def registry_for(self, claims: StepClaims) -> ToolRegistry:
        """The tools the calling step's namespace may use."""
        return await self._tools.registry_for(claims.namespace)

    async def tool_call(self, claims: StepClaims) -> ToolCallRecord:
        """The calling attempt's recorded tool call (404 when the operator recorded none)."""
        return await self._call(claims)

    async def step_input(self, claims: StepClaims) -> StepInput:
        call = await self._call(claims)
        with store_boundary("read earlier results"):
            earlier = await self._tool_calls.latest_successful(
                UUID(claims.run_id), tenant_id=claims.tenant
            )
        inputs = {
            step_id: record.result
            for step_id, record in sorted(earlier.items())
            if step_id != claims.step_id and record.tenant_id == claims.tenant
        }
        return StepInput(
            run_id=claims.run_id,
            tenant=claims.tenant,
            step_id=claims.step_id,
            attempt=claims.attempt,
            tool=claims.tool,
            params=call.params,
            inputs=inputs,
            idempotency_key=step_idempotency_key(claims.run_id, claims.step_id),
            config=(
                await self._step_config.for_step(claims.tenant, await self._spec(claims))
                if self._step_config is not None
                else StepConfig()
            ),
        )

    async def knowledge_search(
        self, claims: StepClaims, params: KnowledgeSearchParams
    ) -> KnowledgeSearchResult:
        self._require_tool(claims, ToolName.KNOWLEDGE_SEARCH)
        return await self._knowledge.search(claims.tenant, params.query, params.top_k)

    async def upload_artifact(
        self, claims: StepClaims, *, title: str, content_type: str, content: bytes
    ) -> ArtifactUploaded:
        if SCOPE_WRITE_ARTIFACTS not in (await self._spec(claims)).scopes:
            raise Forbidden(f"a {claims.tool!r} step may not upload artifacts")
        return await self._artifacts.store(
            tenant=claims.tenant,
            run_id=UUID(claims.run_id),
            step_id=claims.step_id,
            title=title,
            content_type=content_type,
            content=content,
        )

    async def record_result(
        self, claims: StepClaims, body: StepResultIn, request_id: str | None = None
    ) -> StepResultRecorded:
        """Record the attempt's outcome; the first outcome wins and replays get its answer."""
        spec = await self._spec(claims)
        call = await self._call(claims)
        first_outcome = call.success is None
        if first_outcome:
            success, result, error = body.success, body.result, body.error
            if success and result is not None:
                try:
                    result = spec.validate_result(result).model_dump(mode="json", by_alias=True)
                except ToolContractError as exc:
                    success, result, error = False, None, f"{CONTRACT_VIOLATION}{exc}"
            elapsed = datetime.now(UTC) - call.started_at
            with store_boundary("record the tool result"):
                call = await self._tool_calls.record_result(
                    run_id=call.run_id,
                    step_id=call.step_id,
                    attempt=call.attempt,
                    tool=call.tool,
                    tool_version=call.tool_version or spec.version,
                    tenant_id=call.tenant_id,
                    params=call.params,
                    result=result,
                    success=success,
                    error=error,
                    duration_ms=max(int(elapsed.total_seconds() * 1000), 0),
                )
            if spec.side_effect:
                await self._audit_side_effect(call, request_id)
        if call.success is False and (call.error or "").startswith(CONTRACT_VIOLATION):
            message = (call.error or "")[len(CONTRACT_VIOLATION) :]
            raise ResultContractViolation(
                f"the result does not fit the {claims.tool} contract; recorded as failed: "
                f"{message}",
                details=[ErrorItem(loc="result", msg=message)],
            )
        return StepResultRecorded(call_id=str(call.id), recorded=True)

    async def _audit_side_effect(self, call: ToolCallRecord, request_id: str | None) -> None:
        """Every side-effecting tool call lands in the audit log, success or not."""
        if self._audit is None:
            return
        with store_boundary("audit the tool call"):
            await self._audit.append(
                tenant_id=call.tenant_id,
                actor=f"run/{call.run_id}",
                action="tool.side_effect",
                target=call.tool,
                request_id=request_id,
                payload={
                    "runId": str(call.run_id),
                    "stepId": call.step_id,
                    "attempt": call.attempt,
                    "callId": str(call.id),
                    "success": call.success,
                    "error": call.error,
                    "idempotencyKey": f"{call.run_id}:{call.step_id}",
                },
            )
