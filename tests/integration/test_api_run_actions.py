"""Approve, cancel, continue, tool execution and idempotency keys through the HTTP API.

A real `sba-agentic api` (its own Kubernetes identity, `sba-api` in the
delegating-approvers group) and operator against the real control plane,
Postgres, Redis and node agent. Tool pods reach the gateway through the
fault-injecting proxy of test_run_semantics, so a step's Job can be held running.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sba_core.auth.dev_tokens import mint_dev_token
from sba_devstack.procs import free_port, log_tail
from sba_devstack.services import Service, http_ok
from tests.fixtures.controlplane import Kubectl
from tests.fixtures.stack import api_kubeconfig, wait_for
from tests.integration.test_operator import apply, get_json, operator_env, tenant_manifest
from tests.integration.test_run_semantics import FaultyGateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TENANT = "actions"
NS = f"tenant-{TENANT}"
SEARCH = {"id": "look", "tool": "knowledge.search", "params": {"query": "refunds"}}


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Api:
    url: str
    secret: str
    operator: Service

    def token(self, user: str, roles: tuple[str, ...], tenant: str = TENANT) -> str:
        return mint_dev_token(self.secret, tenant=tenant, user=user, roles=roles)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        user: str = "mia",
        roles: tuple[str, ...] = ("member",),
        tenant: str = TENANT,
        key: str | None = None,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {self.token(user, roles, tenant)}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return Reply(resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Reply(err.code, json.loads(err.read() or b"{}"), dict(err.headers))

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def create_run(self, key: str | None = None, **spec: Any) -> str:
        reply = self.post("/api/v1/runs", {"prompt": "What is the refund policy?", **spec}, key=key)
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    def wait_run(
        self, run_id: str, check: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            assert self.operator.running, log_tail(self.operator.log_path)
            reply = self.get(f"/api/v1/runs/{run_id}")
            assert reply.status == 200, reply.body
            return reply.body if check(reply.body) else None

        try:
            found: dict[str, Any] = wait_for(probe, timeout=150, interval=0.3, what=what)
        except AssertionError:
            print(log_tail(self.operator.log_path, 60))
            raise
        return found


def phase_in(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda run: run.get("phase") in phases


def awaiting_approval(run: dict[str, Any]) -> bool:
    return run.get("phase") == "awaiting_approval"


def answer(step: str, status: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    return {"stepId": step, "approval": {"status": status, "reason": reason}, **extra}


@pytest.fixture(scope="module")
def system(
    request: pytest.FixtureRequest,
    crds_installed: None,
    node_agent: Any,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
    kubectl: Kubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Api, FaultyGateway]]:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("run-actions")
    secret = secrets.token_urlsafe(48)
    with FaultyGateway(api_url) as gateway:
        env = {
            **operator_env(kubeconfig, app_dsn, redis_url, gateway.url, secrets.token_urlsafe(48)),
            "SBA_API_HOST": "127.0.0.1",
            "SBA_API_PORT": str(port),
            "SBA_PUBLIC_URL": api_url,
            "SBA_GATEWAY_TIMEOUT_SECONDS": "60",
            "SBA_JWT_HS256_SECRET": secret,
            "SBA_APPROVAL_WAIT_SECONDS": "4",
        }
        api_env = {**env, "KUBECONFIG": str(api_kubeconfig(request, kubeconfig))}
        api = Service("api", api_env, logs / "api.log", ready=http_ok(f"{api_url}/readyz"))
        api.start()
        operator = Service("operator", env, logs / "operator.log").start()
        try:
            apply(kubectl, tenant_manifest(TENANT))
            wait_for(
                lambda: (
                    (get_json(kubectl, "tenant", TENANT) or {}).get("status", {}).get("phase")
                    == "ready"
                ),
                timeout=90,
                what=f"tenant {TENANT} ready",
            )
            yield Api(api_url, secret, operator), gateway
        finally:
            operator.stop()
            api.stop()
            print(f"logs: {logs}")


@pytest.fixture(scope="module")
def api(system: tuple[Api, FaultyGateway]) -> Api:
    return system[0]


def gated_run(api: Api, **policy: Any) -> str:
    run_id = api.create_run(plan=[SEARCH], approvalPolicy={"always": True, **policy})
    api.wait_run(run_id, awaiting_approval, f"{run_id} awaiting approval")
    return run_id


# -- approvals --------------------------------------------------------------------------------


def test_approve_through_the_api_resumes_the_run(api: Api) -> None:
    run_id = gated_run(api, quorum=2)
    path = f"/api/v1/runs/{run_id}/approvals"
    # The body may not say who answers or when: the token and the server clock do.
    forged = api.post(
        path, answer("look", "approved", actor="someone-else"), user="ann", roles=("approver",)
    )
    assert forged.status == 400, forged.body
    assert forged.body["error"]["details"][0]["loc"] == "actor"
    nested = {"stepId": "look", "approval": {"status": "approved", "ts": "2025-01-01T00:00:00Z"}}
    assert api.post(path, nested, user="ann", roles=("approver",)).status == 400
    # A member may not approve; an approver may.
    assert api.post(path, answer("look", "approved"), user="mia").status == 403
    first = api.post(
        path, answer("look", "approved", "fine", runId=run_id), user="ann", roles=("approver",)
    )
    assert first.status == 201, first.body
    assert (first.body["actor"], first.body["decision"]) == ("ann", "approved")
    assert (first.body["outcome"], first.body["outcomeReason"]) == ("accepted", "Accepted")
    assert first.body["ts"] is not None
    assert first.headers["Location"] == first.body["links"]["self"]
    # Answering twice is a 409, whichever path catches it.
    again = api.post(path, answer("look", "approved"), user="ann", roles=("approver",))
    assert (again.status, again.body["error"]["code"]) == (409, "already_answered"), again.body
    # The second approver completes the quorum of 2 and the run resumes.
    second = api.post(path, answer("look", "approved"), user="bob", roles=("approver",))
    assert second.status == 201, second.body
    done = api.wait_run(run_id, phase_in("completed", "failed"), f"{run_id} done")
    assert done["phase"] == "completed", done
    decisions = done["steps"][0]["approval"]["decisions"]
    assert [(d["approver"], d["decision"]) for d in decisions] == [
        ("ann", "approved"),
        ("bob", "approved"),
    ]
    assert decisions[0]["ts"][:19] == first.body["ts"][:19]  # the Approval's creation time
    # The step is no longer waiting: 409.
    late = api.post(path, answer("look", "approved"), user="cy", roles=("approver",))
    assert (late.status, late.body["error"]["code"]) == (409, "step_not_awaiting_approval")
    polled = api.get(first.body["links"]["self"])
    assert (polled.status, polled.body["outcome"]) == (200, "accepted")
    audit = api.get("/api/v1/audit?limit=200", user="boss", roles=("tenant-admin",)).body
    mine = [
        (e["actor"], e["action"])
        for e in audit["items"]
        if e["payload"].get("runId") == run_id
        or e["payload"].get("approval", "").startswith(done["name"])
    ]
    assert ("ann", "run.approval_submitted") in mine
    assert ("ann", "approval.approved") in mine


def test_deny_through_the_api_fails_the_run(api: Api) -> None:
    run_id = gated_run(api)
    path = f"/api/v1/runs/{run_id}/approvals"
    key = f"deny-{uuid.uuid4().hex}"
    denied = api.post(
        path, answer("look", "denied", "too risky"), user="ann", roles=("approver",), key=key
    )
    assert denied.status == 201, denied.body
    # The same request again with its key: the first answer, replayed, not a second one.
    replay = api.post(
        path, answer("look", "denied", "too risky"), user="ann", roles=("approver",), key=key
    )
    assert replay.status == 201
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.body == denied.body
    done = api.wait_run(run_id, phase_in("completed", "failed"), f"{run_id} done")
    assert done["reason"] == "ApprovalDenied", done
    assert done["steps"][0]["attempts"] == 0


def test_approval_refusals(api: Api) -> None:
    run_id = gated_run(api)
    path = f"/api/v1/runs/{run_id}/approvals"
    approver = {"user": "ann", "roles": ("approver",)}
    other = api.post(path, answer("look", "approved"), tenant="intruders", **approver)
    assert other.status == 403, other.body
    unknown = api.post(
        f"/api/v1/runs/{uuid.uuid4()}/approvals", answer("look", "approved"), **approver
    )
    assert unknown.status == 404, unknown.body
    wrong_step = api.post(path, answer("nope", "approved"), **approver)
    assert (wrong_step.status, wrong_step.body["error"]["code"]) == (404, "step_not_found")
    wrong_run = api.post(path, answer("look", "approved", runId=str(uuid.uuid4())), **approver)
    assert wrong_run.status == 400
    assert api.get(f"/api/v1/runs/{run_id}").body["phase"] == "awaiting_approval"
    # A step that never needed approval is not waiting for one.
    plain = api.create_run(plan=[SEARCH])
    api.wait_run(plain, phase_in("completed"), f"{plain} completed")
    notwaiting = api.post(f"/api/v1/runs/{plain}/approvals", answer("look", "approved"), **approver)
    assert notwaiting.status == 409, notwaiting.body


def test_an_answer_the_operator_has_not_seen_yet_is_202_then_counts(api: Api) -> None:
    run_id = gated_run(api)
    api.operator.stop()
    try:
        pending = api.post(
            f"/api/v1/runs/{run_id}/approvals",
            answer("look", "approved"),
            user="ann",
            roles=("approver",),
        )
        assert pending.status == 202, pending.body
        assert pending.body["outcome"] == "pending"
        polled = api.get(pending.body["links"]["self"])
        assert (polled.status, polled.body["outcome"]) == (200, "pending")
    finally:
        api.operator.start()
    done = api.wait_run(run_id, phase_in("completed", "failed"), f"{run_id} done")
    assert done["phase"] == "completed", done
    assert api.get(pending.body["links"]["self"]).body["outcome"] == "accepted"


# -- cancel and continue ----------------------------------------------------------------------


def test_cancel_during_a_running_job(system: tuple[Api, FaultyGateway], kubectl: Kubectl) -> None:
    api, gateway = system
    gateway.faults[("slow", 1)] = "hang"
    run_id = api.create_run(
        plan=[{"id": "slow", "tool": "knowledge.search", "params": {"query": "x"}}]
    )
    running = api.wait_run(
        run_id,
        lambda r: bool(r.get("steps")) and r["steps"][0]["phase"] == "running",
        f"{run_id} running",
    )
    job = f"{running['name']}-slow-a1"
    wait_for(lambda: get_json(kubectl, "job", job, "-n", NS), what=f"job {job}")
    path = f"/api/v1/runs/{run_id}/cancel"
    viewer = api.post(path, {"reason": "no"}, user="vic", roles=("viewer",))
    assert viewer.status == 403
    cancelled = api.post(path, {"reason": "not needed"}, user="carol")
    assert cancelled.status == 202, cancelled.body
    assert cancelled.body["spec"]["cancel"] == {"requestedBy": "carol", "reason": "not needed"}
    # The same request again is a no-op; anyone else's is a conflict.
    assert api.post(path, {"reason": "not needed"}, user="carol").status == 202
    other = api.post(path, {"reason": "mine"}, user="dan")
    assert (other.status, other.body["error"]["code"]) == (409, "run_already_cancelled")
    done = api.wait_run(run_id, phase_in("cancelled"), f"{run_id} cancelled")
    status = get_json(kubectl, "agentrun", done["name"], "-n", NS) or {}
    assert status["status"]["cancellation"]["requestedBy"] == "carol"
    assert done["steps"][0]["phase"] == "cancelled"
    wait_for(lambda: get_json(kubectl, "job", job, "-n", NS) is None, what=f"job {job} deleted")
    finished = api.post(f"/api/v1/runs/{run_id}/continue", {"stepId": "slow", "input": "x"})
    assert finished.status == 409
    audit = api.get(
        "/api/v1/audit?action=run.cancel_requested", user="boss", roles=("tenant-admin",)
    ).body
    assert any(
        e["actor"] == "carol" and e["payload"].get("runId") == run_id for e in audit["items"]
    )


def test_cancel_a_finished_run_is_409(api: Api) -> None:
    run_id = api.create_run(plan=[SEARCH])
    api.wait_run(run_id, phase_in("completed"), f"{run_id} completed")
    late = api.post(f"/api/v1/runs/{run_id}/cancel", {})
    assert (late.status, late.body["error"]["code"]) == (409, "run_finished")


def test_continue_supplies_user_input(api: Api) -> None:
    ask = {"id": "ask", "tool": "user.input", "params": {"prompt": "Which region?"}}
    render = {"id": "doc", "tool": "render.document", "params": {"title": "Answer"}}
    run_id = api.create_run(plan=[ask, render])
    api.wait_run(run_id, lambda r: r.get("reason") == "AwaitingInput", f"{run_id} waiting")
    path = f"/api/v1/runs/{run_id}/continue"
    assert api.post(path, {"stepId": "nope", "input": "x"}).status == 404
    notinput = api.post(path, {"stepId": "doc", "input": "x"})
    assert (notinput.status, notinput.body["error"]["code"]) == (409, "step_not_awaiting_input")
    given = api.post(path, {"stepId": "ask", "input": "EMEA"}, user="carol")
    assert given.status == 202, given.body
    assert given.body["spec"]["inputs"] == {"ask": "EMEA"}
    again = api.post(path, {"stepId": "ask", "input": "APAC"}, user="carol")
    assert (again.status, again.body["error"]["code"]) == (409, "input_already_given")
    done = api.wait_run(run_id, phase_in("completed", "failed"), f"{run_id} done")
    assert done["phase"] == "completed", done
    assert "EMEA" in done["steps"][0]["summary"]


# -- idempotency and tool execution -----------------------------------------------------------


def test_idempotent_run_creation(api: Api, kubectl: Kubectl) -> None:
    key = f"create-{uuid.uuid4().hex}"
    prompt = f"idempotent {uuid.uuid4().hex}"
    first = api.post("/api/v1/runs", {"prompt": prompt, "plan": [SEARCH]}, key=key)
    assert first.status == 201, first.body
    assert "Idempotent-Replayed" not in first.headers
    replay = api.post("/api/v1/runs", {"plan": [SEARCH], "prompt": prompt}, key=key)
    assert replay.status == 201
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.body["id"] == first.body["id"]
    assert replay.headers.get("Location") == first.headers.get("Location")
    items = (get_json(kubectl, "agentruns", "-n", NS) or {}).get("items") or []
    assert [i["metadata"]["uid"] for i in items if i["spec"]["prompt"] == prompt] == [
        first.body["id"]
    ]
    reused = api.post("/api/v1/runs", {"prompt": prompt + "!"}, key=key)
    assert (reused.status, reused.body["error"]["code"]) == (409, "idempotency_key_reused")
    elsewhere = api.post(f"/api/v1/runs/{first.body['id']}/cancel", {}, key=key)
    assert (elsewhere.status, elsewhere.body["error"]["code"]) == (409, "idempotency_key_reused")
    someone_else = api.post(
        "/api/v1/runs", {"prompt": prompt, "plan": [SEARCH]}, key=key, user="zed"
    )
    assert someone_else.status == 409
    bad_key = api.post("/api/v1/runs", {"prompt": prompt}, key="\u00e9t\u00e9")
    assert bad_key.status == 400


def test_concurrent_duplicates_create_one_run(api: Api, kubectl: Kubectl) -> None:
    key = f"race-{uuid.uuid4().hex}"
    prompt = f"raced {uuid.uuid4().hex}"
    replies: list[Reply] = []

    def send() -> None:
        replies.append(api.post("/api/v1/runs", {"prompt": prompt, "plan": [SEARCH]}, key=key))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in replies) == [201, 201, 201, 201], [r.body for r in replies]
    assert len({r.body["id"] for r in replies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 3
    items = (get_json(kubectl, "agentruns", "-n", NS) or {}).get("items") or []
    assert len([i for i in items if i["spec"]["prompt"] == prompt]) == 1


def test_tool_execute_runs_one_step(api: Api) -> None:
    bad = api.post("/api/v1/tools/knowledge.search/execute", {"params": {"topK": 3}})
    assert bad.status == 400, bad.body
    assert [d["loc"] for d in bad.body["error"]["details"]] == ["params.query"]
    assert api.post("/api/v1/tools/no.such/execute", {"params": {}}).status == 404
    key = f"tool-{uuid.uuid4().hex}"
    body = {"params": {"query": "refund policy"}}
    started = api.post("/api/v1/tools/knowledge.search/execute", body, key=key)
    assert started.status == 202, started.body
    assert (started.body["tool"], started.body["stepId"]) == (
        "knowledge.search",
        "knowledge-search",
    )
    again = api.post("/api/v1/tools/knowledge.search/execute", body, key=key)
    assert again.body["runId"] == started.body["runId"]
    run_id = started.body["runId"]
    done = api.wait_run(run_id, phase_in("completed", "failed"), f"{run_id} done")
    assert done["phase"] == "completed", done
    assert [(s["id"], s["tool"], s["phase"]) for s in done["steps"]] == [
        ("knowledge-search", "knowledge.search", "succeeded")
    ]
    assert done["user"] == "mia"
