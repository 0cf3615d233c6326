"""The route table: each route's method, path, handler and models, in one place.

`add_routes` registers it with aiohttp and `sba_api.openapi.build_openapi`
documents it, so the OpenAPI document lists exactly the routes that exist.
"""

from __future__ import annotations

from aiohttp import web

from sba_api.handlers import artifacts, events, gateway, knowledge, runs, system
from sba_api.openapi import Media, RouteSpec
from sba_api.schemas import (
    AgentRunSpec,
    ArtifactList,
    ArtifactUploaded,
    EventsQuery,
    Health,
    KnowledgeDocumentCreated,
    KnowledgeDocumentIn,
    KnowledgeSearchIn,
    KnowledgeSearchResult,
    RunCreated,
    RunList,
    RunListQuery,
    RunView,
    StepInput,
    StepResultIn,
    StepResultRecorded,
    ToolCatalog,
)
from sba_core.tools.contracts import KnowledgeSearchParams

API = "/api/v1"
INTERNAL = "/internal/v1"
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
        request=AgentRunSpec,
        responses={201: RunCreated},
        errors=(*JSON_BODY_ERRORS, 404, 502, 503),
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
    ),
    RouteSpec(
        "GET",
        f"{API}/tools",
        system.tools,
        "listTools",
        "The tool catalog",
        "tools",
        responses={200: ToolCatalog},
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
    ),
    RouteSpec(
        "GET",
        "/readyz",
        system.readyz,
        "readyz",
        "Readiness: Postgres and Redis reachable",
        "system",
        responses={200: Health, 503: Health},
    ),
    RouteSpec(
        "GET",
        "/metrics",
        system.metrics,
        "metrics",
        "Prometheus metrics",
        "system",
        responses={200: Media("text/plain", description="Prometheus text exposition format.")},
    ),
    RouteSpec(
        "GET",
        "/openapi.json",
        system.openapi,
        "openapi",
        "This document",
        "system",
        responses={200: Media("application/json", {"type": "object"}, "OpenAPI 3.1 document.")},
    ),
    RouteSpec(
        "GET",
        "/docs",
        system.docs,
        "docs",
        "Swagger UI",
        "system",
        responses={200: Media("text/html", description="Swagger UI page.")},
    ),
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.operation_id)
