"""A run driven end to end — from kubectl and from the API — on the real stack."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.e2e.sse_client import collect
from tests.fixtures.stack import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _run_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _agentrun(name: str, tenant: str, prompt: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "sba-agentic.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": f"tenant-{tenant}"},
            "spec": {"tenant": tenant, "prompt": prompt, **spec},
        }
    )


def _get_run(kubectl: Callable[..., Any], tenant: str, name: str) -> dict[str, Any]:
    got = kubectl("get", "agentrun", name, "-n", f"tenant-{tenant}", "-o", "json")
    assert got.returncode == 0, got.stderr
    run: dict[str, Any] = json.loads(got.stdout)
    return run


def _wait_phase(
    kubectl: Callable[..., Any], tenant: str, name: str, phases: set[str], timeout: float = 120
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = _get_run(kubectl, tenant, name)
        return run if run.get("status", {}).get("phase") in phases else None

    result: dict[str, Any] = wait_for(done, timeout=timeout, what=f"run {name} in {phases}")
    return result


def _download(stack: Stack, url: str) -> tuple[str, bytes]:
    request = urllib.request.Request(stack.api_url + url, headers=stack.auth())
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.headers["Content-Type"], resp.read()


def test_kubectl_run_completes_with_a_document(
    stack: Stack, demo_tenant: str, kubectl: Callable[..., Any]
) -> None:
    name = _run_name("kubectl")
    prompt = (
        "Write a brief: what is our refund policy for damaged goods?"
        " How long does shipping abroad take?"
    )
    applied = kubectl("apply", "-f", "-", input=_agentrun(name, demo_tenant, prompt))
    assert applied.returncode == 0, applied.stderr

    run = _wait_phase(kubectl, demo_tenant, name, {"completed", "failed"})
    status = run["status"]
    assert status["phase"] == "completed", status
    assert [s["tool"] for s in status["steps"]] == [
        "knowledge.search",
        "knowledge.search",
        "llm.generate",
        "render.document",
    ]
    assert all(s["phase"] == "succeeded" and s["attempts"] == 1 for s in status["steps"])
    assert all(s.get("startedAt") and s.get("finishedAt") for s in status["steps"])
    assert {c["type"] for c in status["conditions"]} >= {"Succeeded"} or status["conditions"]

    content_type, body = _download(stack, status["result"]["artifactUrl"])
    assert content_type.startswith("text/markdown")
    text = body.decode()
    assert "damaged" in text.lower()
    assert "14 business days" in text or "abroad" in text.lower()
    assert "## Answer" in text  # the model's answer is in the document, with its citations
    assert status["result"]["answer"].startswith("Based on the knowledge base")
    body_text = status["result"]["answer"].split("\n\n")[1]
    assert body_text[:40] in text.replace("\\", "")

    printed = kubectl("get", "agentrun", name, "-n", f"tenant-{demo_tenant}")
    assert "completed" in printed.stdout
    assert demo_tenant in printed.stdout


async def test_api_run_streams_events_in_order(stack: Stack, demo_tenant: str) -> None:
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        async with session.post(
            f"{stack.api_url}/api/v1/runs",
            json={"tenant": demo_tenant, "prompt": "Summarise our security and data handling."},
        ) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        assert created["phase"] == "pending"
        status, events = await collect(session, stack.api_url + created["links"]["events"])
    assert status == 200
    seqs = [int(e.id or 0) for e in events]
    assert seqs == list(range(1, len(events) + 1)), seqs
    types = [e.event for e in events]
    assert types[:3] == ["pending", "planning", "plan_ready"], types
    assert types[-1] == "completed"
    assert types.count("step_started") == 3  # search, answer, render
    assert types.count("step_succeeded") == 3
    assert types.count("token") > 1  # the answer streamed
    for event in events:
        body = event.json
        assert body["runId"] == created["id"]
        assert body["tenantId"] == demo_tenant
        assert body["type"] == event.event
        assert body["seq"] == int(event.id or 0)

    # The `completed` event is written before the status (crash-safe order): poll for it.
    def finished() -> dict[str, Any] | None:
        status, run = stack.get(f"/api/v1/runs/{created['id']}")
        return run if status == 200 and run["phase"] == "completed" else None

    run = await asyncio.to_thread(wait_for, finished, 30, 0.2, "the run's status to say completed")
    assert run["result"]["artifactId"]
    assert run["result"]["answer"]


async def test_reconnect_with_last_event_id_sees_every_event_once(
    stack: Stack, demo_tenant: str
) -> None:
    async with aiohttp.ClientSession(headers=stack.auth()) as session:
        async with session.post(
            f"{stack.api_url}/api/v1/runs",
            json={"tenant": demo_tenant, "prompt": "What is in the onboarding checklist?"},
        ) as resp:
            created = await resp.json()
        url = stack.api_url + created["links"]["events"]
        _, first = await collect(session, url, stop_after=2)  # then drop the connection
        assert len(first) == 2
        await asyncio.sleep(1.0)  # the run moves on while nobody listens
        _, rest = await collect(session, url, last_event_id=first[-1].id)
        _, full = await collect(session, url)  # a fresh subscriber replays everything
        after_end = await session.get(url, headers={"Last-Event-ID": full[-1].id or ""})
        assert after_end.status == 204
    resumed = [e.id for e in first + rest]
    assert resumed == [e.id for e in full]
    assert len(set(resumed)) == len(resumed)
    assert full[-1].event == "completed"


def test_invalid_manifests_are_refused_with_clear_messages(
    demo_tenant: str, kubectl: Callable[..., Any], stack: Stack
) -> None:
    ns = f"tenant-{demo_tenant}"

    def apply(spec: dict[str, Any]) -> str:
        doc = {
            "apiVersion": "sba-agentic.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": _run_name("bad"), "namespace": ns},
            "spec": spec,
        }
        result = kubectl("apply", "-f", "-", input=json.dumps(doc))
        assert result.returncode != 0, "the API server accepted an invalid run"
        return str(result.stderr)

    assert "spec.prompt: Required value" in apply({"tenant": demo_tenant})
    unknown_tool = apply(
        {"tenant": demo_tenant, "prompt": "x", "plan": [{"tool": "shell.exec", "params": {}}]}
    )
    # Refused by the operator's admission webhook, against the namespace's tool catalog.
    assert "unknown tool 'shell.exec'" in unknown_tool
    assert "knowledge.search" in unknown_tool
    assert 'unknown field "spec.promt"' in apply(
        {"tenant": demo_tenant, "prompt": "x", "promt": "typo"}
    )
    too_long = apply(
        {
            "tenant": demo_tenant,
            "prompt": "x",
            "options": {"maxSteps": 1},
            "plan": [
                {"tool": "knowledge.search", "params": {"query": "a"}},
                {"tool": "knowledge.search", "params": {"query": "b"}},
            ],
        }
    )
    assert "more steps than spec.options.maxSteps allows" in too_long
    assert "spec.options.topK" in apply(
        {"tenant": demo_tenant, "prompt": "x", "options": {"topK": 500}}
    )
