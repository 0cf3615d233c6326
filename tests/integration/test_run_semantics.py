"""Run semantics against the real control plane, Postgres, Redis, node agent, API and operator.

Approve (kubectl, as the Kubernetes user — the admission policy binds the approver),
deny, expiry, double answers, cancel of a running Job, continue with user input,
transient failure retried, permanent failure not retried, run deadline, and the
per-tenant FIFO queue.

Tool pods reach the API's gateway through `FaultyGateway`, a forwarding proxy in
this test that can hang or fail chosen (step, attempt)s — read from the step
token's claims — so failures happen in a controlled way. It is a test double for
this module only; every other component is the real one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sba_devstack.procs import free_port, log_tail
from sba_devstack.services import Service, http_ok
from sba_store.audit import AuditRepository
from sba_store.db import Pool
from sba_store.dead_letters import DeadLetterRepository
from tests.fixtures.controlplane import Kubectl
from tests.fixtures.stack import wait_for
from tests.integration.test_operator import apply, get_json, operator_env, tenant_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TENANT = "semantics"
NS = f"tenant-{TENANT}"
QTENANT = "queue"
QNS = f"tenant-{QTENANT}"


# -- the fault-injecting gateway proxy ---------------------------------------------------------


class FaultyGateway:
    """Forwards tool-pod requests to the API; `faults[(step, attempt)]` hangs or fails them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: dict[tuple[str, int], str] = {}
        self.seen: list[tuple[str, int, str]] = []
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _claims(self) -> tuple[str, int]:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                try:
                    payload = token.split(".")[1]
                    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                    return str(data.get("step_id", "")), int(data.get("attempt", 0))
                except (IndexError, ValueError):
                    return "", 0

            def _forward(self) -> None:
                step, attempt = self._claims()
                proxy.seen.append((step, attempt, self.path))
                fault = proxy.faults.get((step, attempt))
                if fault == "hang":
                    proxy.release.wait(120)
                    with contextlib.suppress(OSError):  # the pod is usually gone by now
                        self.send_error(503)
                    return
                if fault == "unavailable":
                    self.send_error(503)
                    return
                if fault == "refuse":
                    self.send_error(400, "refused by the test")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type", "accept", "idempotency-key")
                    or k.lower().startswith("x-")
                }
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as resp:
                        status, data, rh = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as err:
                    status, data, rh = err.code, err.read(), err.headers
                self.send_response(status)
                for key in ("Content-Type", "ETag"):
                    if rh.get(key):
                        self.send_header(key, rh[key])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyGateway:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.release.set()
        self.server.shutdown()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(
    crds_installed: None,
    node_agent: Any,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
    kubectl: Kubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("semantics")
    with FaultyGateway(api_url) as gateway:
        env = {
            **operator_env(kubeconfig, app_dsn, redis_url, gateway.url, secrets.token_urlsafe(48)),
            "SBA_API_HOST": "127.0.0.1",
            "SBA_API_PORT": str(port),
            "SBA_PUBLIC_URL": api_url,
            "SBA_GATEWAY_TIMEOUT_SECONDS": "60",
            "SBA_JWT_HS256_SECRET": secrets.token_urlsafe(48),  # the API refuses to start without
        }
        api = Service("api", env, logs / "api.log", ready=http_ok(f"{api_url}/readyz")).start()
        operator = Service("operator", env, logs / "operator.log").start()
        try:
            for name, quotas in ((TENANT, {}), (QTENANT, {"maxConcurrentRuns": 1})):
                manifest = tenant_manifest(name)
                if quotas:
                    manifest["spec"]["quotas"] = quotas
                apply(kubectl, manifest)
                wait_for(
                    lambda n=name: (
                        (get_json(kubectl, "tenant", n) or {}).get("status", {}).get("phase")
                        == "ready"
                    ),
                    timeout=90,
                    what=f"tenant {name} ready",
                )
            yield {"gateway": gateway, "operator": operator, "api": api, "logs": logs}
        finally:
            operator.stop()
            api.stop()
            print(f"logs: {logs}")


@pytest.fixture(scope="module")
def alice(control_plane: Any, kubectl: Kubectl, system: dict[str, Any]) -> Path:
    """User alice: may read runs, answer approvals and cancel runs in both namespaces."""
    for ns in (NS, QNS):
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "run-operator", "namespace": ns},
            "rules": [
                {
                    "apiGroups": ["sba-agentic.io"],
                    "resources": ["agentruns", "approvals"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update"],
                }
            ],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "alice-run-operator", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "run-operator",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            ],
        }
        apply(kubectl, role)
        apply(kubectl, binding)
    path: Path = control_plane.kubeconfig_for("alice", ["approvers"])
    return path


@pytest_asyncio.fixture(loop_scope="session")
async def repos(pg_pool: Pool) -> dict[str, Any]:
    return {"audit": AuditRepository(pg_pool), "dead_letters": DeadLetterRepository(pg_pool)}


# -- helpers ----------------------------------------------------------------------------------


def new_run(kubectl: Kubectl, prefix: str, namespace: str = NS, **spec: Any) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    tenant = namespace.removeprefix("tenant-")
    apply(
        kubectl,
        {
            "apiVersion": "sba-agentic.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"tenant": tenant, "prompt": "What is the refund policy?", **spec},
        },
    )
    return name


def run_obj(kubectl: Kubectl, name: str, namespace: str = NS) -> dict[str, Any]:
    return get_json(kubectl, "agentrun", name, "-n", namespace) or {}


def wait_status(
    kubectl: Kubectl,
    system: dict[str, Any],
    name: str,
    check: Any,
    what: str,
    namespace: str = NS,
    timeout: float = 150,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        assert system["operator"].running, log_tail(system["operator"].log_path)
        status: dict[str, Any] = run_obj(kubectl, name, namespace).get("status") or {}
        return status if check(status) else None

    try:
        found: dict[str, Any] = wait_for(probe, timeout=timeout, interval=0.3, what=what)
    except AssertionError:
        print(log_tail(system["operator"].log_path, 60))
        raise
    return found


def phase_in(*phases: str) -> Any:
    return lambda s: s.get("phase") in phases


def approval_manifest(
    name: str,
    run: str,
    step: str,
    digest: str,
    approver: str,
    decision: str = "approved",
    namespace: str = NS,
) -> dict[str, Any]:
    return {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "Approval",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "run": run,
            "stepId": step,
            "decision": decision,
            "approver": approver,
            "reason": f"{decision} in a test",
            "digest": digest,
        },
    }


def create_as(kubectl: Kubectl, kubeconfig: Path | None, manifest: dict[str, Any]) -> Any:
    return kubectl("create", "-f", "-", input=json.dumps(manifest), kubeconfig=kubeconfig)


def approval_status(kubectl: Kubectl, name: str, namespace: str = NS) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status: dict[str, Any] = (get_json(kubectl, "approval", name, "-n", namespace) or {}).get(
            "status"
        ) or {}
        return status if status.get("outcome") else None

    found: dict[str, Any] = wait_for(probe, timeout=60, what=f"approval {name} answered")
    return found


SEARCH = {"id": "look", "tool": "knowledge.search", "params": {"query": "refunds"}}
GATED = {"always": True, "approvers": ["alice"]}


def waiting(
    kubectl: Kubectl, system: dict[str, Any], prefix: str, **policy: Any
) -> tuple[str, str]:
    name = new_run(kubectl, prefix, plan=[SEARCH], approvalPolicy={**GATED, **policy})
    status = wait_status(kubectl, system, name, phase_in("awaiting_approval"), f"{name} waiting")
    step = status["steps"][0]
    assert step["phase"] == "awaiting_approval"
    assert step["attempts"] == 0
    assert not (get_json(kubectl, "jobs", "-n", NS, "-l", f"sba-agentic.io/run={name}") or {}).get(
        "items"
    ), "no Job may exist before the approval"
    return name, str(step["approval"]["digest"])


# -- approvals --------------------------------------------------------------------------------


async def test_alice_approves_with_kubectl_and_the_step_runs(
    system: dict[str, Any], kubectl: Kubectl, alice: Path, repos: dict[str, Any]
) -> None:
    name, digest = waiting(kubectl, system, "approve")
    # Alice cannot answer in Bob's name: the admission policy binds the approver.
    forged = create_as(
        kubectl, alice, approval_manifest(f"{name}-forged", name, "look", digest, "bob")
    )
    assert forged.returncode != 0
    assert "must be your own user name" in forged.stderr
    done = create_as(kubectl, alice, approval_manifest(f"{name}-ok", name, "look", digest, "alice"))
    assert done.returncode == 0, done.stderr
    assert approval_status(kubectl, f"{name}-ok")["outcome"] == "accepted"
    status = wait_status(kubectl, system, name, phase_in("completed", "failed"), f"{name} done")
    assert status["phase"] == "completed", status
    approval = status["steps"][0]["approval"]
    assert approval["state"] == "approved"
    assert [(d["approver"], d["decision"]) for d in approval["decisions"]] == [
        ("alice", "approved")
    ]
    # An Approval cannot be edited afterwards.
    edit = kubectl(
        "patch",
        "approval",
        f"{name}-ok",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"decision": "denied"}}),
        kubeconfig=alice,
    )
    assert edit.returncode != 0
    entries = await repos["audit"].list_for_tenant(TENANT)
    mine = [e for e in entries if e.payload.get("approval") == f"{name}-ok"]
    assert [(e.actor, e.action) for e in mine] == [("alice", "approval.approved")]


def test_denial_fails_the_run(system: dict[str, Any], kubectl: Kubectl, alice: Path) -> None:
    name, digest = waiting(kubectl, system, "deny")
    created = create_as(
        kubectl, alice, approval_manifest(f"{name}-no", name, "look", digest, "alice", "denied")
    )
    assert created.returncode == 0, created.stderr
    status = wait_status(kubectl, system, name, phase_in("failed", "completed"), f"{name} done")
    assert status["reason"] == "ApprovalDenied", status
    assert status["steps"][0]["approval"]["state"] == "denied"
    assert status["steps"][0]["attempts"] == 0


def test_unanswered_request_expires(system: dict[str, Any], kubectl: Kubectl) -> None:
    name, _ = waiting(kubectl, system, "expire", timeoutSeconds=3)
    status = wait_status(kubectl, system, name, phase_in("failed", "completed"), f"{name} done")
    assert status["reason"] == "ApprovalExpired", status
    assert status["steps"][0]["approval"]["state"] == "expired"


def test_double_answer_and_unknown_targets_are_rejected(
    system: dict[str, Any], kubectl: Kubectl, alice: Path
) -> None:
    name, digest = waiting(kubectl, system, "twice", quorum=2, approvers=["alice", "sba-admin"])
    first = create_as(kubectl, alice, approval_manifest(f"{name}-1", name, "look", digest, "alice"))
    assert first.returncode == 0, first.stderr
    assert approval_status(kubectl, f"{name}-1")["outcome"] == "accepted"
    second = create_as(
        kubectl, alice, approval_manifest(f"{name}-2", name, "look", digest, "alice")
    )
    assert second.returncode == 0, second.stderr
    rejected = approval_status(kubectl, f"{name}-2")
    assert (rejected["outcome"], rejected["reason"]) == ("rejected", "AlreadyAnswered")
    nowhere = create_as(
        kubectl, alice, approval_manifest(f"{name}-3", "no-such-run", "look", digest, "alice")
    )
    assert nowhere.returncode == 0, nowhere.stderr
    assert approval_status(kubectl, f"{name}-3")["reason"] == "RunNotFound"
    wrong = create_as(kubectl, alice, approval_manifest(f"{name}-4", name, "nope", digest, "alice"))
    assert wrong.returncode == 0, wrong.stderr
    assert approval_status(kubectl, f"{name}-4")["reason"] == "StepNotFound"
    assert run_obj(kubectl, name)["status"]["phase"] == "awaiting_approval"  # quorum 2
    # The admin (second approver) completes the quorum.
    third = create_as(
        kubectl, None, approval_manifest(f"{name}-5", name, "look", digest, "sba-admin")
    )
    assert third.returncode == 0, third.stderr
    status = wait_status(kubectl, system, name, phase_in("completed", "failed"), f"{name} done")
    assert status["phase"] == "completed", status


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_during_a_running_job(system: dict[str, Any], kubectl: Kubectl, alice: Path) -> None:
    gateway: FaultyGateway = system["gateway"]
    plan = [{"id": "slow", "tool": "knowledge.search", "params": {"query": "x"}}]
    gateway.faults[("slow", 1)] = "hang"
    name = new_run(kubectl, "cancel", plan=plan)

    def job_running(s: dict[str, Any]) -> bool:
        return bool(s.get("steps")) and s["steps"][0]["phase"] == "running"

    wait_status(kubectl, system, name, job_running, f"{name} running")
    job = f"{name}-slow-a1"
    wait_for(lambda: get_json(kubectl, "job", job, "-n", NS), what=f"job {job}")
    forged = kubectl(
        "patch",
        "agentrun",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"cancel": {"requestedBy": "bob"}}}),
        kubeconfig=alice,
    )
    assert forged.returncode != 0
    assert "requestedBy must be your own user name" in forged.stderr
    patched = kubectl(
        "patch",
        "agentrun",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"cancel": {"requestedBy": "alice", "reason": "not needed"}}}),
        kubeconfig=alice,
    )
    assert patched.returncode == 0, patched.stderr
    status = wait_status(kubectl, system, name, phase_in("cancelled"), f"{name} cancelled")
    assert status["cancellation"]["requestedBy"] == "alice"
    assert status["message"] == "cancelled by alice: not needed"
    assert status["steps"][0]["phase"] == "cancelled"
    wait_for(lambda: get_json(kubectl, "job", job, "-n", NS) is None, what=f"job {job} deleted")
    # Cancel is final.
    undo = kubectl(
        "patch",
        "agentrun",
        name,
        "-n",
        NS,
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/cancel"}]),
    )
    assert undo.returncode != 0


# -- continue ---------------------------------------------------------------------------------


def test_continue_with_user_input(system: dict[str, Any], kubectl: Kubectl) -> None:
    ask = {"id": "ask", "tool": "user.input", "params": {"prompt": "Which region?"}}
    render = {"id": "doc", "tool": "render.document", "params": {"title": "Answer"}}
    name = new_run(kubectl, "input", plan=[ask, render])
    status = wait_status(
        kubectl, system, name, lambda s: s.get("reason") == "AwaitingInput", f"{name} waiting"
    )
    assert status["steps"][0]["phase"] == "awaiting_input"
    patched = kubectl(
        "patch",
        "agentrun",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"inputs": {"ask": "EMEA"}}}),
    )
    assert patched.returncode == 0, patched.stderr
    status = wait_status(kubectl, system, name, phase_in("completed", "failed"), f"{name} done")
    assert status["phase"] == "completed", status
    assert status["steps"][0]["phase"] == "succeeded"
    assert "EMEA" in status["steps"][0]["summary"]
    change = kubectl(
        "patch",
        "agentrun",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"inputs": {"ask": "APAC"}}}),
    )
    assert change.returncode != 0  # an input, once given, is part of the record


# -- retries and deadlines --------------------------------------------------------------------


async def test_transient_failure_is_retried_then_succeeds(
    system: dict[str, Any], kubectl: Kubectl
) -> None:
    gateway: FaultyGateway = system["gateway"]
    gateway.faults[("flaky", 1)] = "unavailable"
    plan = [{"id": "flaky", "tool": "knowledge.search", "params": {"query": "refunds"}}]
    retry = {"maxAttempts": 3, "backoffBaseSeconds": 1, "jitter": 0}
    name = new_run(kubectl, "retry", plan=plan, retry=retry)
    status = wait_status(kubectl, system, name, phase_in("completed", "failed"), f"{name} done")
    assert status["phase"] == "completed", status
    step = status["steps"][0]
    assert step["attempts"] == 2
    assert step["jobName"] == f"{name}-flaky-a2"
    assert get_json(kubectl, "job", f"{name}-flaky-a1", "-n", NS) is not None


def test_permanent_failure_is_not_retried(system: dict[str, Any], kubectl: Kubectl) -> None:
    gateway: FaultyGateway = system["gateway"]
    gateway.faults[("bad", 1)] = "refuse"
    plan = [{"id": "bad", "tool": "knowledge.search", "params": {"query": "x"}}]
    name = new_run(kubectl, "perm", plan=plan, retry={"maxAttempts": 3, "backoffBaseSeconds": 1})
    status = wait_status(kubectl, system, name, phase_in("completed", "failed"), f"{name} done")
    assert status["reason"] == "StepFailed", status
    assert status["steps"][0]["attempts"] == 1
    assert get_json(kubectl, "job", f"{name}-bad-a2", "-n", NS) is None


async def test_exhausted_retries_are_dead_lettered(
    system: dict[str, Any], kubectl: Kubectl, repos: dict[str, Any]
) -> None:
    gateway: FaultyGateway = system["gateway"]
    for attempt in (1, 2):
        gateway.faults[("dead", attempt)] = "unavailable"
    plan = [{"id": "dead", "tool": "knowledge.search", "params": {"query": "x"}}]
    name = new_run(kubectl, "dead", plan=plan, retry={"maxAttempts": 2, "backoffBaseSeconds": 1})
    status = wait_status(kubectl, system, name, phase_in("completed", "failed"), f"{name} done")
    assert status["reason"] == "StepDeadLettered", status
    assert status["steps"][0]["attempts"] == 2
    assert status["steps"][0]["deadLettered"] is True
    letters = await repos["dead_letters"].list_for_run(uuid.UUID(status["runId"]), tenant_id=TENANT)
    assert [(x.step_id, x.attempts) for x in letters] == [("dead", 2)]


def test_run_deadline_exceeded(system: dict[str, Any], kubectl: Kubectl) -> None:
    gateway: FaultyGateway = system["gateway"]
    gateway.faults[("stuck", 1)] = "hang"
    plan = [{"id": "stuck", "tool": "knowledge.search", "params": {"query": "x"}}]
    name = new_run(kubectl, "deadline", plan=plan, deadlineSeconds=5)
    status = wait_status(kubectl, system, name, phase_in("failed", "completed"), f"{name} done")
    assert status["reason"] == "DeadlineExceeded", status
    job = f"{name}-stuck-a1"
    wait_for(lambda: get_json(kubectl, "job", job, "-n", NS) is None, what=f"job {job} deleted")


# -- per-tenant concurrency -------------------------------------------------------------------


def test_queue_admits_runs_in_fifo_order(
    system: dict[str, Any], kubectl: Kubectl, alice: Path
) -> None:
    gated = {"always": True}
    names = []
    for i in range(3):
        names.append(new_run(kubectl, f"q{i}", QNS, plan=[SEARCH], approvalPolicy=gated))
        time.sleep(1.1)  # distinct creation timestamps
    first, second, third = names
    wait_status(kubectl, system, first, phase_in("awaiting_approval"), "first holds the slot", QNS)
    s2 = wait_status(kubectl, system, second, lambda s: s.get("queuePosition") == 1, "q 1", QNS)
    assert (s2["phase"], s2["reason"]) == ("pending", "Queued")
    s3 = wait_status(kubectl, system, third, lambda s: s.get("queuePosition") == 2, "q 2", QNS)
    assert s3["phase"] == "pending"
    cancel = {"spec": {"cancel": {"requestedBy": "alice"}}}
    done = kubectl(
        "patch",
        "agentrun",
        first,
        "-n",
        QNS,
        "--type=merge",
        "-p",
        json.dumps(cancel),
        kubeconfig=alice,
    )
    assert done.returncode == 0, done.stderr
    wait_status(kubectl, system, second, phase_in("awaiting_approval"), "second admitted", QNS)
    s3 = wait_status(kubectl, system, third, lambda s: s.get("queuePosition") == 1, "q 1", QNS)
    assert s3["phase"] == "pending"
    for name in (second, third):
        kubectl(
            "patch",
            "agentrun",
            name,
            "-n",
            QNS,
            "--type=merge",
            "-p",
            json.dumps(cancel),
            kubeconfig=alice,
        )
    wait_status(kubectl, system, third, phase_in("cancelled"), "third cancelled", QNS)
