"""The route table: each route's method, path, handler and models, in one place.

`add_routes` registers it with aiohttp and `sba_api.openapi.build_openapi`
documents it, so the OpenAPI document lists exactly the routes that exist.
"""

from __future__ import annotations

from aiohttp import web

from sba_api.handlers import (
    agui,
    artifacts,
    audit,
    events,
    gateway,
    gateway_tasks,
    knowledge,
    run_actions,
    runs,
    system,
    tenants,
    tools,
)
from sba_api.handlers._idempotency import idempotent
from sba_api.openapi import Media, RouteSpec
from sba_api.schemas import (
    ApprovalIn,
    ApprovalView,
    ArtifactList,
    ArtifactUploaded,
    AuditList,
    AuditQuery,
    CancelIn,
    ContinueIn,
    EventsQuery,
    Health,
    KnowledgeDocumentCreated,
    KnowledgeDocumentIn,
    KnowledgeSearchIn,
    KnowledgeSearchResult,
    PlanView,
    RunCreated,
    RunList,
    RunListQuery,
    RunRequest,
    RunView,
    StepInput,
    StepProgressIn,
    StepProgressRecorded,
    StepResultIn,
    StepResultRecorded,
    StreamToken,
    TenantCreateIn,
    TenantDeleted,
    TenantUsage,
    TenantView,
    ToolCatalog,
    ToolExecuteIn,
    ToolExecution,
    ToolListQuery,
    UsageQuery,
)
from sba_api.schemas_agui import AguiQuery, AguiRunInput
from sba_core.auth.permissions import Permission
from sba_core.tools.contracts import (
    KnowledgeSearchParams,
    LlmGenerateResult,
    TaskCreated,
    TaskFields,
)

API = "/api/v1"
INTERNAL = "/internal/v1"

GATEWAY_PROTOCOL = """The tool gateway: what a tool step's pod may call, with the step token \
(`Authorization: Bearer $SBA_STEP_TOKEN`, one attempt of one step, for that step only). \
The pod finds the gateway at `$SBA_GATEWAY_URL`.

**User tools** (a `Tool` or `ClusterTool`) need none of this: their program reads its \
params as one JSON object on stdin and writes its result as one JSON object on stdout; \
the platform's entrypoint `sba-step` (copied into the pod by an init container) fetches \
the step (`GET /internal/v1/step`), runs the program and posts its outcome \
(`POST /internal/v1/step/result`), checked against the tool's `result` JSON Schema. Exit \
code 0 is success, 2 a permanent failure (stderr's tail is the error), anything else a \
transient one (retried per the tool's `retry`). `SBA_IDEMPOTENCY_KEY` (the same for every \
attempt of the step) is in the program's environment for side effects.

Tools that want more call the gateway themselves, with the same token: \
`POST /internal/v1/step/progress` (progress shown live to clients), \
`POST /internal/v1/artifacts` (a stored artifact; the tool needs the `write:artifacts` \
scope), and `POST /internal/v1/model/generate` (an `llm.generate` step's model call, \
streamed to clients as `token` events). Provider credentials never reach a tool pod."""

TAGS = {"gateway": GATEWAY_PROTOCOL}
JSON_BODY_ERRORS = (400, 413, 415)
UUID_FORMAT = {"run_id": "uuid", "artifact_id": "uuid"}

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        f"{API}/runs",
        runs.create_run,
        "createRun",
        "Start a run: creates an AgentRun in the tenant's namespace",
        "runs",
        request=RunRequest,
        responses={201: RunCreated},
        errors=(*JSON_BODY_ERRORS, 404, 502, 503),
        permission=Permission.RUNS_CREATE,
        idempotent=True,
    ),
    RouteSpec(
        "POST",
        f"{API}/plan",
        runs.preview_plan,
        "previewPlan",
        "The plan a run would get (seed 000's POST /agent/plan): its steps, the approvals each"
        " would wait for and the cost estimate; creates nothing",
        "runs",
        request=RunRequest,
        responses={200: PlanView},
        errors=(*JSON_BODY_ERRORS, 404, 502, 503),
        permission=Permission.RUNS_CREATE,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs",
        runs.list_runs,
        "listRuns",
        "A tenant's runs, newest first (keyset pagination)",
        "runs",
        query=RunListQuery,
        responses={200: RunList},
        errors=(400, 503),
        permission=Permission.RUNS_READ,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs/{{run_id}}",
        runs.get_run,
        "getRun",
        "A run with its live status (database record when the AgentRun is gone)",
        "runs",
        responses={200: RunView},
        errors=(404, 502, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs/{{run_id}}/events",
        events.stream_events,
        "streamRunEvents",
        "The run's events as Server-Sent Events (replay after Last-Event-ID, then live)",
        "runs",
        query=EventsQuery,
        headers={"Last-Event-ID": "Resume after this event id (seq or <run-id>:<seq>)."},
        responses={
            200: Media(
                "text/event-stream",
                description="`id: <seq>`, `event: <type>`, `data: <RunEvent JSON>`; "
                "ends after a terminal event.",
            ),
            204: Media(
                "text/plain",
                {"type": "string", "maxLength": 0},
                "The client already has the terminal event; stop reconnecting.",
            ),
        },
        errors=(404, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
        stream_token=True,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs/{{run_id}}/agui",
        agui.stream_run,
        "streamRunAgui",
        "The run as AG-UI 1.0 events over SSE (RUN_STARTED, STEP_*, TOOL_CALL_*,"
        " STATE_SNAPSHOT/DELTA, TEXT_MESSAGE_*, RUN_FINISHED success|interrupt|cancelled,"
        " RUN_ERROR), resumable: `id: <seq>.<n>`, reconnect with Last-Event-ID",
        "agui",
        query=AguiQuery,
        headers={"Last-Event-ID": "Resume after this AG-UI event id (`<seq>.<n>`)."},
        responses={
            200: Media(
                "text/event-stream",
                description="`id: <seq>.<n>` (n-th AG-UI event of run event seq, from 0),"
                " `data: <one AG-UI event JSON>`; ends after the run's terminal event.",
            ),
            204: Media(
                "text/plain",
                {"type": "string", "maxLength": 0},
                "The client already has the last event of a finished run; stop reconnecting.",
            ),
        },
        errors=(404, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
        stream_token=True,
    ),
    RouteSpec(
        "POST",
        f"{API}/agui",
        agui.run_agent,
        "runAgui",
        "AG-UI 1.0 endpoint: a RunAgentInput starts a run (prompt = the last user message,"
        " forwardedProps = run terms) or, with `resume`, answers the interrupt of the"
        " thread's run (approval or input, as POST /runs/{id}/approvals and /continue);"
        " streams that AG-UI run until RUN_FINISHED or RUN_ERROR",
        "agui",
        request=AguiRunInput,
        headers={"Last-Event-ID": "Resume this AG-UI run's stream after this event id."},
        responses={
            200: Media(
                "text/event-stream",
                description="`id: <seq>.<n>`, `data: <one AG-UI event JSON>`; ends with"
                " RUN_FINISHED (outcome success, interrupt or cancelled) or RUN_ERROR.",
            ),
        },
        errors=(*JSON_BODY_ERRORS, 403, 404, 409, 502, 503),
        permission=Permission.RUNS_CREATE,
        idempotent=True,
    ),
    RouteSpec(
        "POST",
        f"{API}/runs/{{run_id}}/approvals",
        run_actions.submit_approval,
        "submitApproval",
        "Approve or deny the step awaiting approval, as the token's user (seed 000's payload,"
        " without actor and ts: those come from the token and the server clock). 201 with the"
        " recorded decision once the operator accepted it; 202 when it has not ruled yet"
        " (poll the Location)",
        "runs",
        request=ApprovalIn,
        responses={201: ApprovalView, 202: ApprovalView},
        errors=(*JSON_BODY_ERRORS, 404, 409, 502, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_APPROVE,
        idempotent=True,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs/{{run_id}}/approvals/{{name}}",
        run_actions.get_approval,
        "getApproval",
        "An answer given through the API (or kubectl) and the operator's verdict on it",
        "runs",
        responses={200: ApprovalView},
        errors=(404, 502, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
    ),
    RouteSpec(
        "POST",
        f"{API}/runs/{{run_id}}/cancel",
        run_actions.cancel_run,
        "cancelRun",
        "Stop the run (spec.cancel, requestedBy = the token's user): running Jobs are deleted"
        " and no further step starts. Repeating the same request changes nothing",
        "runs",
        request=CancelIn,
        responses={202: RunView},
        errors=(*JSON_BODY_ERRORS, 404, 409, 502, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_CANCEL,
        idempotent=True,
    ),
    RouteSpec(
        "POST",
        f"{API}/runs/{{run_id}}/continue",
        run_actions.continue_run,
        "continueRun",
        "Give a waiting user.input step its input (spec.inputs[stepId]); once only",
        "runs",
        request=ContinueIn,
        responses={202: RunView},
        errors=(*JSON_BODY_ERRORS, 404, 409, 502, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_CONTINUE,
        idempotent=True,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs/{{run_id}}/artifacts",
        artifacts.list_artifacts,
        "listRunArtifacts",
        "The run's artifacts (metadata)",
        "artifacts",
        responses={200: ArtifactList},
        errors=(404, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
    ),
    RouteSpec(
        "GET",
        f"{API}/runs/{{run_id}}/artifacts/{{artifact_id}}",
        artifacts.download_artifact,
        "downloadArtifact",
        "Download an artifact (ETag is its sha256)",
        "artifacts",
        headers={"If-None-Match": "ETag from an earlier download."},
        responses={
            200: Media(
                "application/octet-stream",
                {"type": "string", "format": "binary"},
                "The artifact's content, with its own Content-Type.",
            ),
            304: None,
        },
        errors=(404, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
    ),
    RouteSpec(
        "POST",
        f"{API}/knowledge/documents",
        knowledge.ingest_document,
        "ingestDocument",
        "Chunk, embed and store a document in a tenant's knowledge base",
        "knowledge",
        request=KnowledgeDocumentIn,
        responses={201: KnowledgeDocumentCreated},
        errors=(*JSON_BODY_ERRORS, 502, 503),
        permission=Permission.KNOWLEDGE_WRITE,
    ),
    RouteSpec(
        "POST",
        f"{API}/knowledge/search",
        knowledge.search,
        "searchKnowledge",
        "Hybrid (vector + full-text) search of a tenant's knowledge base",
        "knowledge",
        request=KnowledgeSearchIn,
        responses={200: KnowledgeSearchResult},
        errors=(*JSON_BODY_ERRORS, 502, 503),
        permission=Permission.KNOWLEDGE_READ,
    ),
    RouteSpec(
        "GET",
        f"{API}/tools",
        system.tools,
        "listTools",
        "The tools a tenant's runs may use: builtins, the platform's ClusterTools and the"
        " tenant's own Tools (within its allowedTools), each with its contracts",
        "tools",
        query=ToolListQuery,
        responses={200: ToolCatalog},
        errors=(400, 404),
        permission=Permission.TOOLS_READ,
    ),
    RouteSpec(
        "POST",
        f"{API}/tools/{{name}}/execute",
        tools.execute_tool,
        "executeTool",
        "Run one tool as a one-step run (sandboxed Job, approval policy, events and audit as"
        " for any run); params are checked against the tool's contract first",
        "tools",
        request=ToolExecuteIn,
        responses={202: ToolExecution},
        errors=(*JSON_BODY_ERRORS, 404, 502, 503),
        permission=Permission.TOOLS_EXECUTE,
        idempotent=True,
    ),
    RouteSpec(
        "POST",
        f"{API}/runs/{{run_id}}/stream-token",
        runs.create_stream_token,
        "createStreamToken",
        "A 60-second token for this run's events route only, for EventSource clients "
        "(pass it as ?access_token=)",
        "runs",
        responses={201: StreamToken},
        errors=(404, 503),
        path_formats=UUID_FORMAT,
        permission=Permission.RUNS_READ,
    ),
    RouteSpec(
        "GET",
        f"{API}/audit",
        audit.list_audit,
        "listAudit",
        "The tenant's audit log, newest first (cursor pagination; filter by action, actor, time)",
        "audit",
        query=AuditQuery,
        responses={200: AuditList},
        errors=(400, 503),
        permission=Permission.AUDIT_READ,
    ),
    RouteSpec(
        "POST",
        f"{API}/tenants",
        tenants.create_tenant,
        "createTenant",
        "Create a Tenant resource (the operator provisions it, as for GitOps)",
        "tenants",
        request=TenantCreateIn,
        responses={201: TenantView},
        errors=(*JSON_BODY_ERRORS, 409, 502, 503),
        permission=Permission.TENANTS_ADMIN,
    ),
    RouteSpec(
        "GET",
        f"{API}/tenants/{{tenant}}",
        tenants.get_tenant,
        "getTenant",
        "A tenant's spec and status (your own tenant, or any for a platform admin)",
        "tenants",
        responses={200: TenantView},
        errors=(404, 502, 503),
        permission=Permission.TENANTS_READ,
    ),
    RouteSpec(
        "DELETE",
        f"{API}/tenants/{{tenant}}",
        tenants.delete_tenant,
        "deleteTenant",
        "Delete a Tenant resource (the operator tears it down in order)",
        "tenants",
        responses={202: TenantDeleted},
        errors=(404, 502, 503),
        permission=Permission.TENANTS_ADMIN,
    ),
    RouteSpec(
        "GET",
        f"{API}/tenants/{{tenant}}/usage",
        tenants.tenant_usage,
        "getTenantUsage",
        "A tenant's usage from Postgres: runs by phase, tool calls, run seconds",
        "tenants",
        query=UsageQuery,
        responses={200: TenantUsage},
        errors=(400, 404, 503),
        permission=Permission.USAGE_READ,
    ),
    RouteSpec(
        "GET",
        f"{INTERNAL}/step",
        gateway.get_step,
        "gatewayGetStep",
        "The calling step's tool, params and earlier steps' results",
        "gateway",
        responses={200: StepInput},
        errors=(401, 403, 404, 503),
        step_token=True,
    ),
    RouteSpec(
        "POST",
        f"{INTERNAL}/knowledge/search",
        gateway.knowledge_search,
        "gatewayKnowledgeSearch",
        "Knowledge search for a knowledge.search step (tenant from the token)",
        "gateway",
        request=KnowledgeSearchParams,
        responses={200: KnowledgeSearchResult},
        errors=(*JSON_BODY_ERRORS, 401, 403, 502, 503),
        step_token=True,
    ),
    RouteSpec(
        "POST",
        f"{INTERNAL}/artifacts",
        gateway.upload_artifact,
        "gatewayUploadArtifact",
        "Store an artifact for the calling step (raw body, title in X-Artifact-Title)",
        "gateway",
        request=Media("application/octet-stream", {"type": "string", "format": "binary"}),
        headers={"X-Artifact-Title": "The artifact's title (percent-encoded UTF-8)."},
        responses={201: ArtifactUploaded},
        errors=(400, 401, 403, 413, 503),
        step_token=True,
    ),
    RouteSpec(
        "POST",
        f"{INTERNAL}/tasks",
        gateway_tasks.create_task,
        "gatewayCreateTask",
        "Create the calling task.create step's task (idempotent per step: 201, then 200)",
        "gateway",
        request=TaskFields,
        responses={201: TaskCreated, 200: TaskCreated},
        errors=(*JSON_BODY_ERRORS, 401, 403, 404, 409, 503),
        step_token=True,
    ),
    RouteSpec(
        "POST",
        f"{INTERNAL}/model/generate",
        gateway.generate,
        "gatewayGenerate",
        "Run the calling llm.generate step's model call: the gateway renders the step's"
        " prompt over the run's goal and earlier results, asks the tenant's model (fallback"
        " model and circuit breakers included, quotas.tokensPerDay enforced), streams the text"
        " to the run's clients as `token` events while it is written, and answers with the"
        " finished text. Safe to repeat: text already streamed for the attempt is never"
        " streamed again. Tools that want streamed text use this route.",
        "gateway",
        responses={200: LlmGenerateResult},
        errors=(401, 403, 404, 422, 503),
        step_token=True,
    ),
    RouteSpec(
        "POST",
        f"{INTERNAL}/step/progress",
        gateway.post_step_progress,
        "gatewayPostStepProgress",
        "Report the calling step attempt's progress (a message and an optional percent):"
        " clients see it at once as a `step_progress` event and in the AG-UI state. Number"
        " the reports with `seq` from 0; a repeated `seq` is stored once. 409 once the"
        " attempt has an outcome.",
        "gateway",
        request=StepProgressIn,
        responses={200: StepProgressRecorded},
        errors=(*JSON_BODY_ERRORS, 401, 403, 404, 409, 503),
        step_token=True,
    ),
    RouteSpec(
        "POST",
        f"{INTERNAL}/step/result",
        gateway.post_step_result,
        "gatewayPostStepResult",
        "Record the calling step attempt's outcome (idempotent per attempt)",
        "gateway",
        request=StepResultIn,
        responses={200: StepResultRecorded},
        errors=(*JSON_BODY_ERRORS, 401, 403, 404, 422, 503),
        step_token=True,
    ),
    RouteSpec(
        "GET",
        "/healthz",
        system.healthz,
        "healthz",
        "Liveness",
        "system",
        responses={200: Health},
        public=True,
    ),
    RouteSpec(
        "GET",
        "/readyz",
        system.readyz,
        "readyz",
        "Readiness: Postgres and Redis reachable",
        "system",
        responses={200: Health, 503: Health},
        public=True,
    ),
    RouteSpec(
        "GET",
        "/metrics",
        system.metrics,
        "metrics",
        "Prometheus metrics",
        "system",
        responses={200: Media("text/plain", description="Prometheus text exposition format.")},
        public=True,
    ),
    RouteSpec(
        "GET",
        "/openapi.json",
        system.openapi,
        "openapi",
        "This document",
        "system",
        responses={200: Media("application/json", {"type": "object"}, "OpenAPI 3.1 document.")},
        public=True,
    ),
    RouteSpec(
        "GET",
        "/docs",
        system.docs,
        "docs",
        "Swagger UI",
        "system",
        responses={200: Media("text/html", description="Swagger UI page.")},
        public=True,
    ),
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.bearer and route.permission is None:
            # Fail closed: a route nobody thought about must not be open to every token.
            raise ValueError(
                f"route {route.method} {route.path} names no permission: set "
                "RouteSpec.permission (sba_core.auth.permissions), or public/step_token"
            )
        handler = idempotent(route.handler) if route.idempotent else route.handler
        app.router.add_route(route.method, route.path, handler, name=route.operation_id)
