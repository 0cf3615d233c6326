"""SIGKILL the operator while planning, while a side-effecting Job runs, and while a run
awaits approval; after a restart every run continues from its status, no step repeats,
and the CRM (a local stub server) sees exactly one effective call per step."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sba_devstack.procs import free_port
from tests.e2e.test_run_lifecycle import _agentrun, _get_run, _wait_phase
from tests.fixtures.stack import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

ADMIN = "sba-admin"


class CrmStub:
    """Records every request; a repeated Idempotency-Key is answered as a replay."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.delay = 0.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                key = self.headers.get("Idempotency-Key") or ""
                stub.calls.append(key)
                time.sleep(stub.delay)
                body = json.dumps({"remoteId": f"crm-{key}", "synced": {"contacts": 1, "deals": 0}})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sync"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def effective(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.calls:
            counts[key] = counts.get(key, 0) + 1
        return counts


@pytest.fixture(scope="module")
def crm(stack: Stack) -> Iterator[CrmStub]:
    if stack.api is None or stack.operator is None:
        pytest.skip("needs a stack started by the fixtures")
    stub = CrmStub()
    previous = stack.api.env.get("SBA_CRM_URL")
    stack.api.stop()
    stack.api.env["SBA_CRM_URL"] = stub.url
    stack.api.start()
    try:
        yield stub
    finally:
        # Give the API its CRM back (the stack's stand-in) for the tests after these.
        stack.api.stop()
        if previous is None:
            stack.api.env.pop("SBA_CRM_URL", None)
        else:
            stack.api.env["SBA_CRM_URL"] = previous
        stack.api.start()
        stub.server.shutdown()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _jobs(kubectl: Callable[..., Any], tenant: str, uid: str) -> list[str]:
    got = kubectl(
        "get", "jobs", "-n", f"tenant-{tenant}", "-l", f"sba-agentic.io/run-uid={uid}", "-o", "json"
    )
    assert got.returncode == 0, got.stderr
    return sorted(j["metadata"]["name"] for j in json.loads(got.stdout)["items"])


SYNC = {"id": "sync", "tool": "crm.sync", "params": {"contacts": [{"email": "a@example.com"}]}}


def _assert_once(run: dict[str, Any], kubectl: Callable[..., Any], tenant: str) -> None:
    status = run["status"]
    assert status["phase"] == "completed", status
    assert all(s["attempts"] == 1 for s in status["steps"]), status["steps"]
    names = _jobs(kubectl, tenant, run["metadata"]["uid"])
    assert len(names) == len(status["steps"]), names


def test_killed_while_planning(stack: Stack, demo_tenant: str, kubectl: Callable[..., Any]) -> None:
    if stack.operator is None:
        pytest.skip("needs an operator started by the fixtures")
    name = _name("crash-plan")
    applied = kubectl(
        "apply", "-f", "-", input=_agentrun(name, demo_tenant, "What is the refund policy?")
    )
    assert applied.returncode == 0, applied.stderr
    time.sleep(0.3)  # the operator picks it up and starts planning
    stack.operator.kill()
    stack.operator.start()
    _assert_once(
        _wait_phase(kubectl, demo_tenant, name, {"completed", "failed"}), kubectl, demo_tenant
    )


def test_killed_while_a_side_effecting_job_runs(
    stack: Stack, demo_tenant: str, kubectl: Callable[..., Any], crm: CrmStub
) -> None:
    assert stack.operator is not None
    crm.delay = 3.0
    name = _name("crash-job")
    applied = kubectl(
        "apply", "-f", "-", input=_agentrun(name, demo_tenant, "Sync the CRM", plan=[SYNC])
    )
    assert applied.returncode == 0, applied.stderr

    def running() -> bool:
        steps = _get_run(kubectl, demo_tenant, name).get("status", {}).get("steps", [])
        return bool(steps) and steps[0]["phase"] == "running"

    wait_for(running, timeout=90, interval=0.05, what="crm step running")
    stack.operator.kill()
    time.sleep(4)  # the Job finishes while nobody watches
    stack.operator.start()
    run = _wait_phase(kubectl, demo_tenant, name, {"completed", "failed"})
    _assert_once(run, kubectl, demo_tenant)
    key = f"{run['metadata']['uid']}:sync"
    assert crm.effective().get(key) == 1, crm.calls


def test_killed_while_awaiting_approval(
    stack: Stack, demo_tenant: str, kubectl: Callable[..., Any], crm: CrmStub
) -> None:
    assert stack.operator is not None
    crm.delay = 0.0
    name = _name("crash-apr")
    manifest = _agentrun(
        name, demo_tenant, "Sync the CRM", plan=[SYNC], approvalPolicy={"sideEffects": True}
    )
    applied = kubectl("apply", "-f", "-", input=manifest)
    assert applied.returncode == 0, applied.stderr
    run = _wait_phase(kubectl, demo_tenant, name, {"awaiting_approval"})
    digest = run["status"]["steps"][0]["approval"]["digest"]
    stack.operator.kill()
    approval = {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "Approval",
        "metadata": {"name": f"{name}-yes", "namespace": f"tenant-{demo_tenant}"},
        "spec": {
            "run": name,
            "stepId": "sync",
            "decision": "approved",
            "approver": ADMIN,
            "reason": "go",
            "digest": digest,
        },
    }
    created = kubectl("create", "-f", "-", input=json.dumps(approval))
    assert created.returncode == 0, created.stderr
    time.sleep(1)
    stack.operator.start()
    run = _wait_phase(kubectl, demo_tenant, name, {"completed", "failed"})
    _assert_once(run, kubectl, demo_tenant)
    decisions = run["status"]["steps"][0]["approval"]["decisions"]
    assert [(d["approver"], d["decision"]) for d in decisions] == [(ADMIN, "approved")]
    got = kubectl("get", "approval", f"{name}-yes", "-n", f"tenant-{demo_tenant}", "-o", "json")
    assert json.loads(got.stdout)["status"]["outcome"] == "accepted"
    assert crm.effective().get(f"{run['metadata']['uid']}:sync") == 1, crm.calls
