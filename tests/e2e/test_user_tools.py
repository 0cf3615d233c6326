"""Tools that users bring, end to end: the examples in examples/tools/ (one in Go, one in
Python) registered as a ClusterTool and a tenant's Tool, listed per tenant, refused when
unknown or called against their contract, and run as sandboxed Jobs of their own images
behind the copied entrypoint, with approvals, retries, deadlines and credentials from a
Secret applying to them exactly as to builtins."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.sse_client import collect
from tests.fixtures.stack import Stack, apply_tenant, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TENANT = "e2e-tools"
OTHER = "e2e-tools-other"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tools"
TEXT = "Refunds are paid in full. Refunds go to the card. Damaged goods are refunded fast."


class Receiver:
    """A chat service's incoming webhook (the third party a tool posts to): refuses the
    first delivery with 503, then accepts, deduplicating on Idempotency-Key."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.seen: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key", "")
                receiver.requests.append(
                    {"body": body, "auth": self.headers.get("Authorization"), "key": key}
                )
                if len(receiver.requests) == 1:
                    self.send_response(503)
                    self.end_headers()
                    return
                duplicate = key in receiver.seen
                message_id = receiver.seen.setdefault(key, f"m{len(receiver.seen) + 1}")
                data = json.dumps({"id": message_id, "duplicate": duplicate}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/team"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _apply(kubectl: Callable[..., Any], manifest: dict[str, Any]) -> Any:
    applied = kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    return applied


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tools_tenant(stack: Stack, kubectl: Callable[..., Any], receiver: Receiver) -> str:
    apply_tenant(
        kubectl, TENANT, {"displayName": "User tools", "approvalPolicy": {"sideEffects": True}}
    )
    apply_tenant(kubectl, OTHER, {"displayName": "Another tenant"})
    namespace = f"tenant-{TENANT}"
    _apply(kubectl, yaml.safe_load((EXAMPLES / "word-stats" / "tool.yaml").read_text()))
    _apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-webhook", "namespace": namespace},
            "stringData": {"url": receiver.url, "token": "s3cret-hook-token"},
        },
    )
    notify = yaml.safe_load((EXAMPLES / "notify-webhook" / "tool.yaml").read_text())
    notify["metadata"]["namespace"] = namespace
    _apply(kubectl, notify)
    # A tool that outlives its deadline (busybox is an image of the dev node).
    _apply(
        kubectl,
        {
            "apiVersion": "sba-agentic.io/v1alpha1",
            "kind": "Tool",
            "metadata": {"name": "slow-echo", "namespace": namespace},
            "spec": {
                "version": "0.1.0",
                "description": "Sleeps far longer than it may.",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "sleep 60; echo '{}'"],
                "timeoutSeconds": 3,
                "retry": {"maxAttempts": 1},
            },
        },
    )
    for kind, name, ns in (
        ("clustertool", "word-stats", None),
        ("tool", "notify-webhook", namespace),
        ("tool", "slow-echo", namespace),
    ):
        where = ["-n", ns] if ns else []
        wait_for(
            lambda kind=kind, name=name, where=where: (
                kubectl("get", kind, name, *where, "-o", "jsonpath={.status.valid}").stdout
                == "true"
            ),
            what=f"the operator to accept {kind} {name}",
        )
    return TENANT


def _run(stack: Stack, headers: dict[str, str], plan: list[dict[str, Any]]) -> dict[str, Any]:
    status, created = stack.post(
        "/api/v1/runs", {"tenant": TENANT, "prompt": "user tools", "plan": plan}, headers=headers
    )
    assert status == 201, created
    return created


def _finished(stack: Stack, run_id: str, headers: dict[str, str], timeout: float) -> Any:
    def done() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{run_id}", headers=headers)
        return run if status == 200 and run["phase"] in ("completed", "failed") else None

    return wait_for(done, timeout=timeout, what=f"run {run_id} to finish")


async def _events_of(
    stack: Stack, run_id: str, headers: dict[str, str], kind: str
) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=headers) as session:
        status, events = await collect(session, f"{stack.api_url}/api/v1/runs/{run_id}/events")
    assert status == 200
    return [e.json["payload"] for e in events if e.event == kind]


def test_the_catalog_shows_each_tenant_its_own_tools(
    stack: Stack, tools_tenant: str, kubectl: Callable[..., Any]
) -> None:
    status, catalog = stack.get("/api/v1/tools", headers=stack.auth(tenant=TENANT))
    assert status == 200, catalog
    kinds = {t["name"]: t["kind"] for t in catalog["items"]}
    assert kinds["word-stats"] == "ClusterTool"
    assert kinds["notify-webhook"] == "Tool"
    assert kinds["knowledge.search"] == "builtin"
    notify = next(t for t in catalog["items"] if t["name"] == "notify-webhook")
    assert notify["sideEffect"] is True
    assert notify["scopes"] == ["write:chat"]
    assert notify["paramsSchema"]["required"] == ["text"]
    # Another tenant sees the platform's catalog, never this tenant's own tools.
    status, other = stack.get("/api/v1/tools", headers=stack.auth(tenant=OTHER))
    assert status == 200, other
    names = {t["name"] for t in other["items"]}
    assert "word-stats" in names
    assert "notify-webhook" not in names
    assert "slow-echo" not in names
    status, refused = stack.get(f"/api/v1/tools?tenant={TENANT}", headers=stack.auth(tenant=OTHER))
    assert status == 403, refused
    # kubectl shows them with their columns.
    listed = kubectl("get", "tools,clustertools", "-A")
    assert listed.returncode == 0, listed.stderr
    assert "notify-webhook" in listed.stdout
    assert "word-stats" in listed.stdout
    assert "SIDE-EFFECT" in listed.stdout
    assert "VALID" in listed.stdout


def test_unknown_tools_and_broken_params_are_refused(stack: Stack, tools_tenant: str) -> None:
    headers = stack.auth(tenant=TENANT)
    status, body = stack.post(
        "/api/v1/runs",
        {"tenant": TENANT, "prompt": "x", "plan": [{"tool": "no-such-tool"}]},
        headers=headers,
    )
    assert status == 400, body
    assert "unknown tool 'no-such-tool'" in body["error"]["message"]
    status, body = stack.post(
        "/api/v1/runs",
        {"tenant": TENANT, "prompt": "x", "plan": [{"tool": "word-stats", "params": {"top": 3}}]},
        headers=headers,
    )
    assert status == 400, body
    assert "'text' is a required property" in body["error"]["message"]
    # The other tenant cannot run this tenant's Tool.
    status, body = stack.post(
        "/api/v1/runs",
        {"tenant": OTHER, "prompt": "x", "plan": [{"tool": "notify-webhook", "params": {}}]},
        headers=stack.auth(tenant=OTHER),
    )
    assert status == 400, body
    assert "unknown tool 'notify-webhook'" in body["error"]["message"]


def test_a_go_tool_runs_from_its_own_image(stack: Stack, tools_tenant: str) -> None:
    headers = stack.auth(tenant=TENANT)
    created = _run(
        stack, headers, [{"id": "stats", "tool": "word-stats", "params": {"text": TEXT, "top": 2}}]
    )
    run = _finished(stack, created["id"], headers, timeout=120)
    assert run["phase"] == "completed", run
    (step,) = run["steps"]
    assert step["tool"] == "word-stats"
    assert step["attempts"] == 1
    summary = step["summary"]
    assert "15" in summary, summary  # words
    assert "refunds" in summary, summary  # the top word


def test_a_side_effect_tool_waits_for_approval_retries_and_posts_once(
    stack: Stack, tools_tenant: str, receiver: Receiver
) -> None:
    headers = stack.auth(tenant=TENANT, user="rina", roles=("member", "approver"))
    created = _run(
        stack,
        headers,
        [{"id": "notify", "tool": "notify-webhook", "params": {"text": "Refund policy ready"}}],
    )

    def waiting() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{created['id']}", headers=headers)
        step = run["steps"][0] if status == 200 and run.get("steps") else None
        return step if step and step["phase"] == "awaiting_approval" else None

    step = wait_for(waiting, timeout=60, what="the notify step to await approval")
    assert receiver.requests == []  # nothing sent before a person said yes
    assert step["approval"]["action"] == "notify-webhook"
    assert step["approval"]["requires"] == ["write:chat"]
    status, body = stack.post(
        f"/api/v1/runs/{created['id']}/approvals",
        {"stepId": "notify", "approval": {"status": "approved", "reason": "send it"}},
        headers={**headers, "Idempotency-Key": f"approve-{created['id']}"},
    )
    assert status in (201, 202), body
    run = _finished(stack, created["id"], headers, timeout=120)
    assert run["phase"] == "completed", run
    (step,) = run["steps"]
    assert step["attempts"] == 2  # the receiver's 503 was transient: retried
    keys = {r["key"] for r in receiver.requests}
    assert keys == {f"{created['id']}:notify"}  # the same key on every attempt
    assert all(r["auth"] == "Bearer s3cret-hook-token" for r in receiver.requests)
    assert [r["body"]["text"] for r in receiver.requests] == ["Refund policy ready"] * 2
    assert receiver.requests[-1]["body"]["runId"] == created["id"]
    # The tool reported progress through the gateway: clients saw it as an event.
    progress = asyncio.run(_events_of(stack, created["id"], headers, "step_progress"))
    assert [p["message"] for p in progress] == ["posting to #general"] * 2
    assert {p["attempt"] for p in progress} == {1, 2}
    # The audit log has the approval of the user tool's side effect.
    status, audit = stack.get(
        f"/api/v1/audit?tenant={TENANT}", headers=stack.auth(tenant=TENANT, roles=("tenant-admin",))
    )
    assert status == 200, audit
    actions = [(e["action"], e.get("target", "")) for e in audit["items"]]
    assert any(a == "approval.approved" for a, _ in actions), actions


def test_a_user_tool_past_its_deadline_fails_the_run(stack: Stack, tools_tenant: str) -> None:
    headers = stack.auth(tenant=TENANT)
    created = _run(stack, headers, [{"id": "slow", "tool": "slow-echo"}])
    run = _finished(stack, created["id"], headers, timeout=90)
    assert run["phase"] == "failed", run
    (step,) = run["steps"]
    assert step["attempts"] == 1
    assert "deadline" in (step["error"] or "").lower(), step


def test_kubectl_apply_refuses_unknown_tools_broken_params_and_broken_tools(
    stack: Stack, tools_tenant: str, kubectl: Callable[..., Any]
) -> None:
    # The operator serves the webhook and keeps its configuration (Kopf's managed mode).
    wait_for(
        lambda: kubectl("get", "validatingwebhookconfiguration", "sba-agentic.io").returncode == 0,
        what="the operator's webhook configuration",
    )

    def run(plan: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "sba-agentic.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "refused-run", "namespace": f"tenant-{TENANT}"},
            "spec": {"tenant": TENANT, "prompt": "refuse me", "plan": plan},
        }

    cases = [
        (run([{"tool": "no-such-tool"}]), "unknown tool 'no-such-tool'"),
        (run([{"tool": "word-stats", "params": {"top": 2}}]), "'text' is a required property"),
        (
            {
                "apiVersion": "sba-agentic.io/v1alpha1",
                "kind": "Tool",
                "metadata": {"name": "broken", "namespace": f"tenant-{TENANT}"},
                "spec": {
                    "version": "1",
                    "description": "A broken contract.",
                    "image": "busybox",
                    "command": ["true"],
                    "params": {"type": "objekt"},
                },
            },
            "not a valid JSON Schema",
        ),
    ]
    for manifest, message in cases:
        applied = kubectl("apply", "-f", "-", input=json.dumps(manifest))
        assert applied.returncode != 0, f"admitted: {manifest}"
        assert message in applied.stderr, applied.stderr
        assert "denied the request" in applied.stderr, applied.stderr
    # Nothing was created.
    assert kubectl("get", "agentrun", "refused-run", "-n", f"tenant-{TENANT}").returncode != 0


def test_the_tenants_tool_call_quota_applies_to_user_tools(
    stack: Stack, tools_tenant: str, kubectl: Callable[..., Any]
) -> None:
    tenant = "e2e-tools-quota"
    apply_tenant(kubectl, tenant, {"displayName": "Quota", "quotas": {"toolCallsPerMinute": 1}})
    headers = stack.auth(tenant=tenant)
    status, created = stack.post(
        "/api/v1/runs",
        {
            "tenant": tenant,
            "prompt": "two user-tool calls",
            "plan": [
                {"id": "one", "tool": "word-stats", "params": {"text": "one two"}},
                {"id": "two", "tool": "word-stats", "params": {"text": "three"}},
            ],
        },
        headers=headers,
    )
    assert status == 201, created

    def limited() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{created['id']}", headers=headers)
        steps = run.get("steps") or [] if status == 200 else []
        if len(steps) == 2 and steps[0]["phase"] == "succeeded" and steps[1]["nextAttemptAt"]:
            return run
        return None

    run = wait_for(limited, timeout=90, what="the second call to wait for the quota")
    assert run["steps"][1]["phase"] == "pending"
    status, _ = stack.post(
        f"/api/v1/runs/{created['id']}/cancel", {"reason": "quota shown"}, headers=headers
    )
    assert status in (200, 202)
