"""Runs that meet trouble: a failing tool step, and an operator killed mid-run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.e2e.sse_client import SseEvent, collect
from tests.e2e.test_run_lifecycle import _agentrun, _get_run, _run_name, _wait_phase
from tests.fixtures.stack import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


async def _all_events(url: str, headers: dict[str, str]) -> list[SseEvent]:
    async with aiohttp.ClientSession(headers=headers) as session:
        _, events = await collect(session, url)
    return events


def _jobs_of(kubectl: Callable[..., Any], tenant: str, run_uid: str) -> list[dict[str, Any]]:
    got = kubectl(
        "get",
        "jobs",
        "-n",
        f"tenant-{tenant}",
        "-l",
        f"sba-agentic.io/run-uid={run_uid}",
        "-o",
        "json",
    )
    assert got.returncode == 0, got.stderr
    items: list[dict[str, Any]] = json.loads(got.stdout)["items"]
    return items


def test_failing_tool_step_fails_the_run_with_the_reason(
    stack: Stack, demo_tenant: str, kubectl: Callable[..., Any]
) -> None:
    if stack.api is None:
        pytest.skip("needs a stack started by the fixtures (the API is stopped on purpose)")
    # Take the tool gateway away: the tool pod cannot fetch its step, exits with a
    # transient error, the Job controller retries it, and finally gives up.
    stack.api.stop()
    try:
        name = _run_name("fails")
        applied = kubectl(
            "apply",
            "-f",
            "-",
            input=_agentrun(
                name, demo_tenant, "What does express shipping cost?", retry={"maxAttempts": 1}
            ),
        )
        assert applied.returncode == 0, applied.stderr
        run = _wait_phase(kubectl, demo_tenant, name, {"completed", "failed"}, timeout=180)
    finally:
        stack.api.start()
    status = run["status"]
    assert status["phase"] == "failed"
    assert status["reason"] == "StepDeadLettered"  # a transient failure, no attempt left
    first = status["steps"][0]
    assert first["phase"] == "failed"
    assert first["id"] in status["message"]
    assert first.get("error")
    assert status["steps"][1]["phase"] == "pending", "no step may start after a failed one"
    events = kubectl(
        "get",
        "events",
        "-n",
        f"tenant-{demo_tenant}",
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    )
    reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
    assert reasons, "the operator posted no Kubernetes Events for the run"


def test_operator_killed_mid_run_neither_loses_nor_repeats_a_step(
    stack: Stack, demo_tenant: str, kubectl: Callable[..., Any]
) -> None:
    if stack.operator is None:
        pytest.skip("needs an operator started by the fixtures")
    name = _run_name("restart")
    applied = kubectl(
        "apply",
        "-f",
        "-",
        input=_agentrun(name, demo_tenant, "How long does international shipping take?"),
    )
    assert applied.returncode == 0, applied.stderr

    def first_step_running() -> bool:
        steps = _get_run(kubectl, demo_tenant, name).get("status", {}).get("steps", [])
        return bool(steps) and steps[0]["phase"] == "running"

    wait_for(first_step_running, timeout=90, interval=0.05, what="first step running")
    stack.operator.kill()  # SIGKILL: no cleanup, no final status write
    time.sleep(3)  # the tool Job finishes while nobody watches
    stack.operator.start()

    run = _wait_phase(kubectl, demo_tenant, name, {"completed", "failed"})
    status = run["status"]
    assert status["phase"] == "completed", status
    assert [s["attempts"] for s in status["steps"]] == [1, 1]
    jobs = _jobs_of(kubectl, demo_tenant, run["metadata"]["uid"])
    assert len(jobs) == len(status["steps"]), [j["metadata"]["name"] for j in jobs]

    events = asyncio.run(
        _all_events(f"{stack.api_url}/api/v1/runs/{run['metadata']['uid']}/events", stack.auth())
    )
    types = [e.event for e in events]
    assert types.count("step_started") == 2, types
    assert types.count("step_succeeded") == 2, types
    assert types.count("completed") == 1, types
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
