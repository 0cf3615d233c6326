"""Run actions and idempotency keys, the pure parts: fingerprints, what is stored,
the approval name, the operator's reasons as HTTP errors, and the route table."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sba_api.openapi import IDEMPOTENCY_HEADER, build_openapi
from sba_api.routes import ROUTES
from sba_api.schemas import ApprovalIn
from sba_api.services.idempotency import fingerprint, should_store
from sba_api.services.run_actions import approval_name, rejection
from sba_api.services.tool_execution import step_id_for
from sba_core.auth.permissions import Permission
from sba_core.models.approval import RejectReason

PATH = "/api/v1/runs"


def test_fingerprint_ignores_json_layout_but_not_content_route_or_caller() -> None:
    one = fingerprint("POST", PATH, "ann", json.dumps({"a": 1, "b": [1, 2]}).encode())
    same = fingerprint("post", PATH, "ann", b'{ "b": [1,2], "a": 1 }')
    assert one == same
    assert one != fingerprint("POST", PATH, "ann", b'{"a": 2, "b": [1, 2]}')
    assert one != fingerprint("POST", f"{PATH}/x/cancel", "ann", b'{"a": 1, "b": [1, 2]}')
    assert one != fingerprint("POST", PATH, "bob", b'{"a": 1, "b": [1, 2]}')
    assert fingerprint("POST", PATH, "ann", b"\xff") != fingerprint("POST", PATH, "ann", b"\xfe")


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        (201, True),
        (202, True),
        (404, True),
        (409, True),
        (400, False),
        (415, False),
        (500, False),
        (503, False),
    ],
)
def test_what_a_key_remembers(status: int, stored: bool) -> None:
    assert should_store(status) is stored


def test_approval_names_are_dns_names_and_stable_per_key() -> None:
    name = approval_name("run-abc12", "crm-sync", "acme\nkey-1")
    assert name == approval_name("run-abc12", "crm-sync", "acme\nkey-1")
    assert name != approval_name("run-abc12", "crm-sync", "acme\nkey-2")
    assert name.startswith("run-abc12-crm-sync-")
    assert len(name.rsplit("-", 1)[1]) == 10
    assert approval_name("r", "s", None) != approval_name("r", "s", None)
    assert len(approval_name("r" * 253, "s" * 40, None)) <= 253


@pytest.mark.parametrize(
    ("reason", "status", "code"),
    [
        (RejectReason.RUN_NOT_FOUND, 404, "run_not_found"),
        (RejectReason.STEP_NOT_FOUND, 404, "step_not_found"),
        (RejectReason.NOT_WAITING, 409, "step_not_awaiting_approval"),
        (RejectReason.ALREADY_ANSWERED, 409, "already_answered"),
        (RejectReason.DIGEST_MISMATCH, 409, "digest_mismatch"),
        (RejectReason.NOT_AN_APPROVER, 403, "not_an_approver"),
    ],
)
def test_operator_reasons_map_to_http(reason: RejectReason, status: int, code: str) -> None:
    error = rejection(reason.value, "why")
    assert (error.status, error.error_code) == (status, code)


def test_approval_body_refuses_actor_and_ts() -> None:
    ok = ApprovalIn.model_validate({"stepId": "s1", "approval": {"status": "denied"}})
    assert ok.approval.status == "denied"
    for body in (
        {"stepId": "s1", "actor": "x", "approval": {"status": "approved"}},
        {"stepId": "s1", "approval": {"status": "approved", "actor": "x"}},
        {"stepId": "s1", "approval": {"status": "approved", "ts": "2025-12-03T12:00:00Z"}},
        {"stepId": "s1", "approval": {"status": "maybe"}},
    ):
        with pytest.raises(ValidationError):
            ApprovalIn.model_validate(body)


def test_step_ids_of_tool_execution_are_dns_labels() -> None:
    assert step_id_for("knowledge.search") == "knowledge-search"


def test_run_action_routes_name_permissions_and_document_idempotency() -> None:
    doc = build_openapi(ROUTES, title="t", version="1")
    wanted = {
        ("POST", "/api/v1/runs"): Permission.RUNS_CREATE,
        ("POST", "/api/v1/runs/{run_id}/approvals"): Permission.RUNS_APPROVE,
        ("POST", "/api/v1/runs/{run_id}/cancel"): Permission.RUNS_CANCEL,
        ("POST", "/api/v1/runs/{run_id}/continue"): Permission.RUNS_CONTINUE,
        ("POST", "/api/v1/tools/{name}/execute"): Permission.TOOLS_EXECUTE,
    }
    routes = {(r.method, r.path): r for r in ROUTES}
    for (method, path), permission in wanted.items():
        route = routes[(method, path)]
        assert route.permission is permission, path
        assert route.idempotent, path
        operation = doc["paths"][path][method.lower()]
        assert operation["x-permission"] == permission.value
        assert IDEMPOTENCY_HEADER in [p["name"] for p in operation["parameters"]]
        assert {"400", "409"} <= set(operation["responses"]), path
    approvals = doc["paths"]["/api/v1/runs/{run_id}/approvals"]["post"]["responses"]
    assert {"201", "202", "403", "404", "409"} <= set(approvals)
