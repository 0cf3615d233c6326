"""Contract test: Schemathesis drives every /api/v1 operation from the served OpenAPI document.

One real `sba-agentic api` process, a tenant with a namespace, and a token of a
member/approver/tenant-admin of it. Every response must be a non-5xx that
conforms to what the document declares (status, content type, body schema).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from kubernetes import client

from sba_core.auth.dev_tokens import mint_dev_token
from tests.integration.api_processes import start_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MAX_EXAMPLES = 20
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def contract_api(
    crds_installed: None,
    kube_api: client.ApiClient,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    core = client.CoreV1Api(kube_api)
    tenant = f"st-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"tenant-{tenant}")))
    secret = secrets.token_urlsafe(48)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "DATABASE_URL": app_dsn,
        "REDIS_URL": redis_url,
        "SBA_STEP_TOKEN_SECRET": secrets.token_urlsafe(48),
        "SBA_JWT_HS256_SECRET": secret,
        "SBA_RATE_LIMIT_ENABLED": "false",
        "SBA_SSE_HEARTBEAT_SECONDS": "0.2",
    }
    logs = tmp_path_factory.mktemp("schemathesis-logs")
    service, url = start_api(env, logs)
    token = mint_dev_token(
        secret, tenant=tenant, user="contract", roles=["member", "approver", "tenant-admin"]
    )
    try:
        yield {"url": url, "tenant": tenant, "headers": {"Authorization": f"Bearer {token}"}}
    finally:
        service.stop()
        core.delete_namespace(f"tenant-{tenant}")
        print(f"schemathesis logs: {logs}")


def _check(case: Any, api: dict[str, Any]) -> None:
    # Aim at the token's tenant, or nearly everything would stop at 403 (tenant scoping
    # has its own tests): the generated bodies and filters then reach Kubernetes and Postgres.
    tenant = api["tenant"]
    if isinstance(case.body, dict) and "tenant" in case.body:
        case.body["tenant"] = tenant
    if case.query and "tenant" in case.query:
        case.query["tenant"] = tenant
    if case.path_parameters and "tenant" in case.path_parameters:
        case.path_parameters["tenant"] = tenant
    # A valid AG-UI input would start a run and stream it until it ends, and no operator
    # runs here: without messages it stops at validation (or at its resume entry).
    if case.path == "/api/v1/agui" and isinstance(case.body, dict):
        case.body["messages"] = []
    # Run ids are random uuids here, so the events route answers 404 and never streams.
    headers = api["headers"]
    response = case.call(headers=headers, timeout=10)
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_api_conforms_to_its_document(contract_api: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{contract_api['url']}/openapi.json").include(
        path_regex=r"^/api/v1/"
    )
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            _check(case, contract_api)

        run()
        tested.append(operation.label)
    assert len(tested) >= 10, tested
    assert not any(label.split(" ", 1)[1].startswith("/internal") for label in tested)
