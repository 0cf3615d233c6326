"""AG-UI on the real stack: POST /api/v1/agui drives runs, GET /runs/{id}/agui resumes them.

Every event received is validated against the official `ag-ui-protocol` models.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from tests.e2e.sse_client import SseEvent, iter_events
from tests.fixtures.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EVENT: TypeAdapter[Any] = TypeAdapter(Event)
PROMPT = "What is our refund policy for damaged goods?"
SEARCH = {"id": "look", "tool": "knowledge.search", "params": {"query": "refund damaged"}}
APPROVER_ROLES = ("member", "approver")


def _input(thread: str, run: str | None, text: str = PROMPT, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "threadId": thread,
        "messages": [
            {"id": "m0", "role": "system", "content": "be brief"},
            {"id": "m1", "role": "user", "content": text},
        ],
        "tools": [],
        "context": [],
        "state": {},
        **extra,
    }
    if run is not None:
        body["runId"] = run
    return body


async def _read(resp: aiohttp.ClientResponse, *, stop_after: int | None = None) -> list[SseEvent]:
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[SseEvent] = []
    async for item in iter_events(resp):
        if isinstance(item, str):
            continue
        EVENT.validate_python(item.json)  # a real AG-UI event, or this raises
        assert item.id is not None
        events.append(item)
        if stop_after is not None and len(events) >= stop_after:
            break
    return events


async def _post(
    session: aiohttp.ClientSession,
    stack: Stack,
    body: dict[str, Any],
    *,
    roles: tuple[str, ...] = ("member",),
    stop_after: int | None = None,
) -> list[SseEvent]:
    headers = {**stack.auth(roles=roles), "Accept": "text/event-stream"}
    async with session.post(f"{stack.api_url}/api/v1/agui", json=body, headers=headers) as resp:
        return await _read(resp, stop_after=stop_after)


def _types(events: list[SseEvent]) -> list[str]:
    return [e.json["type"] for e in events]


def _run_uid(events: list[SseEvent]) -> str:
    snapshot = next(e.json for e in events if e.json["type"] == "STATE_SNAPSHOT")
    return str(snapshot["snapshot"]["runId"])


def test_post_agui_runs_to_success_and_a_reconnect_resumes_exactly(
    stack: Stack, demo_tenant: str
) -> None:
    async def scenario() -> None:
        thread, client_run = f"t-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=240)) as session:
            events = await _post(session, stack, _input(thread, client_run))
            types = _types(events)
            assert types[0] == "RUN_STARTED"
            assert events[0].json["threadId"] == thread
            assert events[0].json["runId"] == client_run
            assert types[1] == "STATE_SNAPSHOT"
            assert types[-1] == "RUN_FINISHED"
            assert events[-1].json["outcome"] == {"type": "success"}
            assert events[-1].json["runId"] == client_run
            # One tool call per step, each with its arguments, end and result.
            uid = _run_uid(events)
            steps = [s["id"] for s in events_state(events)["steps"]]
            assert steps
            for step in steps:
                call = f"{uid}/{step}"
                mine = [e.json["type"] for e in events if e.json.get("toolCallId") == call]
                assert mine == [
                    "TOOL_CALL_START",
                    "TOOL_CALL_ARGS",
                    "TOOL_CALL_END",
                    "TOOL_CALL_RESULT",
                ], (step, mine)
            assert types.count("STEP_STARTED") == types.count("STEP_FINISHED") >= len(steps)
            text = next(e.json for e in events if e.json["type"] == "TEXT_MESSAGE_CONTENT")
            assert text["delta"].strip()
            assert events_state(events)["phase"] == "completed"
            ids = [e.id for e in events]
            assert len(set(ids)) == len(ids)

            # Disconnect mid-stream (the same input again finds the same run, no new one),
            # then reconnect to GET /runs/{id}/agui with Last-Event-ID: exactly the rest.
            cut = len(events) // 2
            first = await _post(session, stack, _input(thread, client_run), stop_after=cut)
            assert [e.id for e in first] == ids[:cut]
            assert [e.json for e in first] == [e.json for e in events[:cut]]
            headers = {**stack.auth(), "Last-Event-ID": first[-1].id or ""}
            url = f"{stack.api_url}/api/v1/runs/{uid}/agui"
            async with session.get(url, headers=headers) as resp:
                rest = await _read(resp)
            assert [e.id for e in rest] == ids[cut:]
            assert [e.json for e in rest] == [e.json for e in events[cut:]]
            # Past the end of a finished run: 204, stop reconnecting.
            headers["Last-Event-ID"] = ids[-1] or ""
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 204
            # A plain /events id works as a position too (after all of run event <seq>).
            seq = int((ids[cut] or "0").split(".")[0])
            headers["Last-Event-ID"] = str(seq)
            async with session.get(url, headers=headers) as resp:
                tail = await _read(resp)
            assert [e.id for e in tail] == [i for i in ids if int(str(i).split(".")[0]) > seq]
            # Another tenant's token sees nothing.
            other = {"Authorization": f"Bearer {stack.token(tenant='other-tenant')}"}
            async with session.get(url, headers=other) as resp:
                assert resp.status in (403, 404)

    asyncio.run(scenario())


def events_state(events: list[SseEvent]) -> dict[str, Any]:
    """The client-side state: STATE_SNAPSHOT with every STATE_DELTA applied."""
    import jsonpatch

    state: Any = None
    for e in events:
        if e.json["type"] == "STATE_SNAPSHOT":
            state = e.json["snapshot"]
        elif e.json["type"] == "STATE_DELTA":
            state = jsonpatch.apply_patch(state, e.json["delta"])
    assert isinstance(state, dict)
    return state


def test_approval_interrupts_and_resume_continues_to_success(
    stack: Stack, demo_tenant: str
) -> None:
    async def scenario() -> None:
        thread = f"t-{uuid.uuid4().hex[:8]}"
        props = {"plan": [SEARCH], "approvalPolicy": {"always": True}}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=240)) as session:
            events = await _post(session, stack, _input(thread, "first", forwardedProps=props))
            last = events[-1].json
            assert last["type"] == "RUN_FINISHED", _types(events)
            assert last["outcome"]["type"] == "interrupt"
            (interrupt,) = last["outcome"]["interrupts"]
            assert interrupt["reason"] == "approval_required"
            meta = interrupt["metadata"]
            assert meta["stepId"] == "look"
            assert meta["action"] == "knowledge.search"
            assert len(meta["digest"]) == 64
            for key in ("costEstimate", "scope", "requires"):
                assert key in meta
            uid = _run_uid(events)
            assert interrupt["toolCallId"] == f"{uid}/look"
            assert "TOOL_CALL_START" in _types(events)

            # A member may not approve through AG-UI either.
            resume = [
                {
                    "interruptId": interrupt["id"],
                    "status": "resolved",
                    "payload": {"approved": True, "reason": "ok"},
                }
            ]
            body = _input(thread, "second", resume=resume)
            headers = {**stack.auth(), "Accept": "text/event-stream"}
            async with session.post(
                f"{stack.api_url}/api/v1/agui", json=body, headers=headers
            ) as resp:
                assert resp.status == 403, await resp.text()

            resumed = await _post(session, stack, body, roles=APPROVER_ROLES)
            types = _types(resumed)
            assert types[0] == "RUN_STARTED"
            assert resumed[0].json["runId"] == "second"
            assert resumed[0].json["threadId"] == thread
            assert types[-1] == "RUN_FINISHED"
            assert resumed[-1].json["outcome"] == {"type": "success"}
            assert "TOOL_CALL_RESULT" in types
            assert "TEXT_MESSAGE_CONTENT" in types
            # Ids continue where the interrupted run's stream stopped.
            last_seq = int((events[-1].id or "0").split(".")[0])
            assert int((resumed[0].id or "0").split(".")[0]) > last_seq

            # The whole run on GET: both AG-UI runs, named by the client's runIds.
            url = f"{stack.api_url}/api/v1/runs/{uid}/agui"
            async with session.get(url, headers=stack.auth()) as resp:
                whole = await _read(resp)
            starts = [e.json["runId"] for e in whole if e.json["type"] == "RUN_STARTED"]
            assert starts == ["first", "second"]
            assert [e.id for e in whole] == [e.id for e in events] + [e.id for e in resumed]

            # Resuming again with the same runId streams the same AG-UI run, answers nothing.
            again = await _post(session, stack, body, roles=APPROVER_ROLES)
            assert [e.id for e in again] == [e.id for e in resumed]

    asyncio.run(scenario())


def test_bad_inputs_are_refused(stack: Stack, demo_tenant: str) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{stack.api_url}/api/v1/agui"
            no_user = {
                "threadId": "t",
                "messages": [{"id": "a", "role": "assistant", "content": "hi"}],
            }
            async with session.post(url, json=no_user, headers=stack.auth()) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "validation_error"
            bad_resume = _input("t", "x", resume=[{"interruptId": "nope", "status": "resolved"}])
            async with session.post(url, json=bad_resume, headers=stack.auth()) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "invalid_resume"
            async with session.post(url, json={"messages": []}, headers=stack.auth()) as resp:
                assert resp.status == 400
            async with session.post(url, json=_input("t", "y")) as resp:
                assert resp.status == 401
            body = json.dumps(_input("t", "z"))
            async with session.post(
                url, data=body, headers={**stack.auth(), "Content-Type": "text/plain"}
            ) as resp:
                assert resp.status == 415

    asyncio.run(scenario())
