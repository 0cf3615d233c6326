"""The AG-UI encoder: every run event type, ids, resume offsets, JSON Patch deltas, and
every emitted event validated against the official `ag-ui-protocol` 1.0 models."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
import pytest
from ag_ui.core import Event, RunAgentInput
from pydantic import BaseModel, TypeAdapter

from sba_core.agui import (
    AguiEncoder,
    AguiFrame,
    Position,
    json_diff,
    parse_event_id,
    parse_interrupt_id,
)
from sba_core.events import EventType

RUN = "0b9f4c1e-7d0a-4a59-9d6f-3c2a1e5b8f00"
THREAD = "thread-1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)

Ev = tuple[str, dict[str, Any]]


def _plan(*steps: tuple[str, str, dict[str, Any]]) -> Ev:
    return (
        EventType.PLAN_READY,
        {
            "planner": "builtin",
            "tokensUsed": 0,
            "steps": [{"id": i, "tool": t, "params": p} for i, t, p in steps],
        },
    )


def _started(step: str, tool: str, attempt: int = 1) -> Ev:
    return (
        EventType.STEP_STARTED,
        {"stepId": step, "index": 0, "tool": tool, "attempt": attempt, "jobName": "j"},
    )


def _succeeded(step: str, tool: str, summary: str, **extra: Any) -> Ev:
    body = {"stepId": step, "index": 0, "tool": tool, "attempt": 1, "summary": summary}
    return (EventType.STEP_SUCCEEDED, {**body, "resultRef": "r", **extra})


HEAD: list[Ev] = [
    (EventType.PENDING, {"name": "run-x", "namespace": "tenant-demo"}),
    (EventType.QUEUED, {"position": 1, "maxConcurrentRuns": 1}),
    (EventType.PLANNING, {}),
    _plan(
        ("search", "knowledge.search", {"query": "refunds", "topK": 3}),
        ("report", "report.render", {"title": "Refunds"}),
    ),
    (EventType.EXECUTING, {}),
]

SUCCESS: list[Ev] = [
    *HEAD,
    _started("search", "knowledge.search"),
    (
        EventType.RATE_LIMITED,
        {"stepId": "report", "tool": "report.render", "attempt": 1, "retryAt": "x"},
    ),
    _succeeded("search", "knowledge.search", "3 passages"),
    _started("report", "report.render"),
    _succeeded("report", "report.render", "rendered the report", artifactId="a1"),
    (EventType.COMPLETED, {"summary": "rendered the report", "artifactId": "a1"}),
]

APPROVAL: list[Ev] = [
    *HEAD,
    _started("search", "knowledge.search"),
    _succeeded("search", "knowledge.search", "3 passages"),
    (
        EventType.AWAITING_APPROVAL,
        {
            "action": "report.render",
            "costEstimate": 5000,
            "scope": "tenant",
            "requires": ["approver"],
            "stepId": "report",
            "attempt": 1,
            "params": {"title": "Refunds"},
            "approvers": ["alice"],
            "approverGroups": [],
            "quorum": 1,
            "requestedAt": "2025-01-01T00:00:00+00:00",
            "expiresAt": "2025-01-01T01:00:00+00:00",
            "digest": "ab" * 32,
        },
    ),
    (EventType.APPROVAL_ANSWERED, {"stepId": "report", "approver": "alice"}),
    (EventType.APPROVED, {"stepId": "report"}),
    _started("report", "report.render"),
    _succeeded("report", "report.render", "rendered"),
    (EventType.COMPLETED, {"summary": "rendered"}),
]

INPUT: list[Ev] = [
    *HEAD[:3],
    _plan(("ask", "user.input", {"prompt": "Which region?"})),
    (EventType.EXECUTING, {}),
    (EventType.AWAITING_INPUT, {"stepId": "ask", "index": 0, "prompt": "Which region?"}),
    (EventType.INPUT_RECEIVED, {"stepId": "ask", "chars": 2}),
    _succeeded("ask", "user.input", "EU"),
    (EventType.COMPLETED, {"summary": "EU"}),
]

FAILURES: list[Ev] = [
    *HEAD,
    (EventType.PLAN_FALLBACK, {"planner": "builtin", "reasons": ["x"]}),
    _started("search", "knowledge.search"),
    (
        EventType.STEP_FAILED,
        {"stepId": "search", "tool": "knowledge.search", "error": "lost pod", "retryable": True},
    ),
    (EventType.STEP_RETRYING, {"stepId": "search", "attempt": 1, "nextAttempt": 2}),
    _started("search", "knowledge.search", attempt=2),
    (
        EventType.STEP_FAILED,
        {"stepId": "search", "tool": "knowledge.search", "error": "lost pod", "retryable": True},
    ),
    (EventType.STEP_DEAD_LETTERED, {"stepId": "search", "lastError": "lost pod"}),
    (EventType.FAILED, {"reason": "StepDeadLettered", "message": "search: lost pod"}),
]

DENIED_SKIP: list[Ev] = [
    *APPROVAL[:8],
    (EventType.APPROVAL_ANSWERED, {"stepId": "report", "approver": "alice"}),
    (EventType.DENIED, {"stepId": "report"}),
    (EventType.STEP_SKIPPED, {"stepId": "report", "reason": "ApprovalDenied: no"}),
    (EventType.COMPLETED, {"summary": "3 passages"}),
]

EXPIRED_FAIL: list[Ev] = [
    *APPROVAL[:8],
    (EventType.EXPIRED, {"stepId": "report", "expiresAt": "2025-01-01T01:00:00+00:00"}),
    (EventType.FAILED, {"reason": "ApprovalExpired", "message": "nobody approved it"}),
]

CANCELLED: list[Ev] = [
    *HEAD,
    _started("search", "knowledge.search"),
    (EventType.CANCELLED, {"requestedBy": "bob", "reason": None, "deletedJobs": ["j"]}),
]

CANCELLED_WHILE_WAITING: list[Ev] = [
    *APPROVAL[:8],
    (EventType.CANCELLED, {"requestedBy": "bob", "reason": "no", "deletedJobs": []}),
]

ALL_SCENARIOS = {
    "success": SUCCESS,
    "approval": APPROVAL,
    "input": INPUT,
    "failures": FAILURES,
    "denied_skip": DENIED_SKIP,
    "expired_fail": EXPIRED_FAIL,
    "cancelled": CANCELLED,
    "cancelled_while_waiting": CANCELLED_WHILE_WAITING,
}


def encode_all(events: list[Ev], run_ids: dict[int, str] | None = None) -> list[AguiFrame]:
    encoder = AguiEncoder(RUN, THREAD, run_ids)
    frames: list[AguiFrame] = []
    for seq, (type_, payload) in enumerate(events, start=1):
        frames.extend(encoder.encode(seq, type_, payload, T0 + timedelta(seconds=seq)))
    return frames


def _no_extras(model: Any, where: str) -> None:
    """Every key we send is one the protocol defines (the models keep unknown keys)."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{where}: unknown fields {model.model_extra}"
        for name in type(model).model_fields:
            _no_extras(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            _no_extras(item, f"{where}[{i}]")


def validate(frame: AguiFrame) -> Any:
    wire = json.loads(json.dumps(frame.event))
    model = EVENT_ADAPTER.validate_python(wire)
    assert model.type.value == wire["type"]
    # Metadata and result are open JSON by definition; everything else is closed.
    _no_extras(model, frame.type)
    return model


def verify_sequence(frames: list[AguiFrame]) -> None:
    """The ordering rules AG-UI clients enforce (@ag-ui/client verifyEvents)."""
    running = False
    steps: set[str] = set()
    calls: set[str] = set()
    message: str | None = None
    finished_ever = False
    for f in frames:
        e, t = f.event, f.type
        if t == "RUN_STARTED":
            assert not running, "RUN_STARTED inside a run"
            running, steps = True, set()
            continue
        assert running, f"{t} outside a run (after {'a finish' if finished_ever else 'nothing'})"
        if t == "STEP_STARTED":
            assert e["stepName"] not in steps
            steps.add(e["stepName"])
        elif t == "STEP_FINISHED":
            assert e["stepName"] in steps, f"STEP_FINISHED of unstarted {e['stepName']}"
            steps.discard(e["stepName"])
        elif t == "TOOL_CALL_START":
            calls.add(e["toolCallId"])
        elif t in ("TOOL_CALL_ARGS", "TOOL_CALL_END"):
            assert e["toolCallId"] in calls
            if t == "TOOL_CALL_END":
                calls.discard(e["toolCallId"])
        elif t == "TEXT_MESSAGE_START":
            assert message is None
            message = e["messageId"]
        elif t == "TEXT_MESSAGE_CONTENT":
            assert message == e["messageId"]
            assert e["delta"]
        elif t == "TEXT_MESSAGE_END":
            assert message == e["messageId"]
            message = None
        elif t in ("RUN_FINISHED", "RUN_ERROR"):
            if t == "RUN_FINISHED":
                assert not steps, f"RUN_FINISHED with open steps {steps}"
                assert not calls
                assert message is None
            running, finished_ever = False, True
    assert not running, "the stream ended inside a run"


@pytest.mark.parametrize("name", sorted(ALL_SCENARIOS))
def test_every_event_is_valid_ag_ui_and_well_ordered(name: str) -> None:
    frames = encode_all(ALL_SCENARIOS[name])
    for frame in frames:
        validate(frame)
    verify_sequence(frames)
    assert frames[0].type == "RUN_STARTED"
    assert frames[0].event == {
        "type": "RUN_STARTED",
        "threadId": THREAD,
        "runId": RUN,
        "timestamp": int((T0 + timedelta(seconds=1)).timestamp() * 1000),
    }
    assert frames[1].type == "STATE_SNAPSHOT"
    assert frames[-1].type in ("RUN_FINISHED", "RUN_ERROR")


def test_ids_number_ag_ui_events_within_each_run_event() -> None:
    frames = encode_all(SUCCESS)
    ids = [f.id for f in frames]
    assert len(set(ids)) == len(ids)
    assert ids[:2] == ["1.0", "1.1"]  # RUN_STARTED + STATE_SNAPSHOT of event 1
    for f in frames:
        assert f.id == f"{f.seq}.{f.index}"
    by_seq: dict[int, list[int]] = {}
    for f in frames:
        by_seq.setdefault(f.seq, []).append(f.index)
    assert all(v == list(range(len(v))) for v in by_seq.values())


def test_success_maps_steps_to_tool_calls_and_the_result_to_a_message() -> None:
    frames = encode_all(SUCCESS)
    types = [f.type for f in frames]
    for step, tool, params in (
        ("search", "knowledge.search", {"query": "refunds", "topK": 3}),
        ("report", "report.render", {"title": "Refunds"}),
    ):
        call = f"{RUN}/{step}"
        start = next(f.event for f in frames if f.event.get("toolCallId") == call)
        assert start == {
            "type": "TOOL_CALL_START",
            "toolCallId": call,
            "toolCallName": tool,
            "timestamp": start["timestamp"],
        }
        args = next(
            f.event for f in frames if f.type == "TOOL_CALL_ARGS" and f.event["toolCallId"] == call
        )
        assert json.loads(args["delta"]) == params
        result = next(
            f.event
            for f in frames
            if f.type == "TOOL_CALL_RESULT" and f.event["toolCallId"] == call
        )
        assert result["content"] in ("3 passages", "rendered the report")
        assert result["messageId"] == f"{call}/result"
    assert types.count("STEP_STARTED") == types.count("STEP_FINISHED") == 2
    content = next(f.event for f in frames if f.type == "TEXT_MESSAGE_CONTENT")
    assert content["delta"].startswith("rendered the report")
    assert f"/api/v1/runs/{RUN}/artifacts/a1" in content["delta"]
    start = next(f.event for f in frames if f.type == "TEXT_MESSAGE_START")
    assert start["role"] == "assistant"
    last = frames[-1].event
    assert last["outcome"] == {"type": "success"}
    assert last["runId"] == RUN
    assert last["threadId"] == THREAD
    assert types.count("RUN_STARTED") == 1


def test_approval_ends_the_ag_ui_run_with_an_interrupt_and_resumes_in_a_new_one() -> None:
    frames = encode_all(APPROVAL, {0: "client-run-1", 1: "client-run-2"})
    finishes = [f for f in frames if f.type == "RUN_FINISHED"]
    assert len(finishes) == 2
    interrupted = finishes[0].event
    assert interrupted["runId"] == "client-run-1"
    outcome = interrupted["outcome"]
    assert outcome["type"] == "interrupt"
    (interrupt,) = outcome["interrupts"]
    assert interrupt["id"] == f"{RUN}:approval:report:1"
    assert interrupt["reason"] == "approval_required"
    assert interrupt["toolCallId"] == f"{RUN}/report"
    assert interrupt["expiresAt"] == "2025-01-01T01:00:00+00:00"
    meta = interrupt["metadata"]
    assert meta["stepId"] == "report"
    assert meta["action"] == "report.render"
    assert meta["costEstimate"] == 5000
    assert meta["scope"] == "tenant"
    assert meta["requires"] == ["approver"]
    assert meta["digest"] == "ab" * 32
    ref = parse_interrupt_id(interrupt["id"])
    assert ref is not None
    assert (ref.run_uid, ref.kind, ref.step_id) == (RUN, "approval", "report")
    # The tool call was proposed before the interrupt, so the client can show what it approves.
    before = frames[: frames.index(finishes[0])]
    assert any(
        f.type == "TOOL_CALL_START" and f.event["toolCallId"] == f"{RUN}/report" for f in before
    )
    # approval_answered yields nothing; approved opens segment 1 under the client's new runId.
    answered_seq = 9
    assert not [f for f in frames if f.seq == answered_seq]
    restarted = next(f for f in frames if f.type == "RUN_STARTED" and f.segment == 1)
    assert restarted.seq == 10
    assert restarted.event["runId"] == "client-run-2"
    assert finishes[1].event["outcome"] == {"type": "success"}
    assert finishes[1].segment == 1
    assert finishes[1].event["runId"] == "client-run-2"


def test_input_interrupt_and_result() -> None:
    frames = encode_all(INPUT)
    interrupt = next(f for f in frames if f.type == "RUN_FINISHED").event["outcome"]["interrupts"][
        0
    ]
    assert interrupt["id"] == f"{RUN}:input:ask"
    assert interrupt["reason"] == "input_required"
    assert interrupt["message"] == "Which region?"
    result = next(f for f in frames if f.type == "TOOL_CALL_RESULT").event
    assert result["content"] == "EU"
    assert result["toolCallId"] == f"{RUN}/ask"


def test_failure_cancel_and_skip_outcomes() -> None:
    failed = encode_all(FAILURES)
    assert failed[-1].event["type"] == "RUN_ERROR"
    assert failed[-1].event["code"] == "StepDeadLettered"
    assert failed[-1].event["message"] == "search: lost pod"
    result = next(f for f in failed if f.type == "TOOL_CALL_RESULT").event
    assert result["content"] == "failed: lost pod"
    assert [f.type for f in failed].count("STEP_STARTED") == 2  # one per attempt
    assert [f.type for f in failed].count("TOOL_CALL_START") == 1  # one call, retried

    cancelled = encode_all(CANCELLED)
    assert cancelled[-1].event["outcome"] == {"type": "cancelled"}
    assert cancelled[-2].type == "STATE_DELTA"
    assert cancelled[-3].event == {
        "type": "STEP_FINISHED",
        "stepName": "search",
        "timestamp": cancelled[-3].event["timestamp"],
    }

    waiting = encode_all(CANCELLED_WHILE_WAITING)
    assert [f.type for f in waiting[-3:]] == ["RUN_STARTED", "STATE_DELTA", "RUN_FINISHED"]

    skipped = encode_all(DENIED_SKIP)
    result = [f for f in skipped if f.type == "TOOL_CALL_RESULT"][-1].event
    assert result["content"].startswith("skipped: ApprovalDenied")
    assert skipped[-1].event["outcome"] == {"type": "success"}

    expired = encode_all(EXPIRED_FAIL)
    assert [f.type for f in expired if f.segment == 1] == [
        "RUN_STARTED",
        "STATE_DELTA",
        "STATE_DELTA",
        "RUN_ERROR",
    ]
    assert expired[-1].event["code"] == "ApprovalExpired"


@pytest.mark.parametrize("name", sorted(ALL_SCENARIOS))
def test_state_deltas_replay_to_the_encoders_state(name: str) -> None:
    encoder = AguiEncoder(RUN, THREAD)
    state: Any = None
    for seq, (type_, payload) in enumerate(ALL_SCENARIOS[name], start=1):
        for frame in encoder.encode(seq, type_, payload):
            if frame.type == "STATE_SNAPSHOT":
                state = frame.event["snapshot"]
            elif frame.type == "STATE_DELTA":
                assert frame.event["delta"], "an empty delta is never sent"
                state = jsonpatch.apply_patch(state, frame.event["delta"])
        assert state == encoder.state()
    phase = encoder.state()["phase"]
    assert phase in ("completed", "failed", "cancelled")


def test_json_diff_is_a_valid_patch() -> None:
    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "e/f": 1, "gone": True}
    new = {"a": 2, "b": {"c": [1, 3], "d": "x", "n": None}, "e/f": 2, "list": [1]}
    patch = json_diff(old, new)
    assert jsonpatch.apply_patch(old, patch) == new
    assert {"op": "replace", "path": "/e~1f", "value": 2} in patch
    assert json_diff(new, new) == []
    assert json_diff([1], [1, 2]) == [{"op": "replace", "path": "", "value": [1, 2]}]


@pytest.mark.parametrize(
    ("raw", "position"),
    [
        (None, Position()),
        ("", Position()),
        ("12", Position(12, None)),
        ("12.2", Position(12, 2)),
        (f"{RUN}:12", Position(12, None)),
        (f"{RUN}:12.0", Position(12, 0)),
        ("12.", Position()),
        ("x.1", Position()),
        ("-1", Position()),
    ],
)
def test_parse_event_id(raw: str | None, position: Position) -> None:
    assert parse_event_id(raw) == position


@pytest.mark.parametrize("name", ["success", "approval", "failures"])
def test_resuming_anywhere_gives_exactly_the_rest(name: str) -> None:
    events = ALL_SCENARIOS[name]
    full = encode_all(events)
    # After every AG-UI id, and after every bare run-event seq (an /events id).
    cuts = [(f.id, i + 1) for i, f in enumerate(full)]
    for seq in range(1, len(events) + 1):
        rest_at = next((i for i, f in enumerate(full) if f.seq > seq), len(full))
        cuts.append((str(seq), rest_at))
    for last_id, rest_at in cuts:
        after = parse_event_id(last_id)
        resumed = [f for f in encode_all(events) if after.before(f.seq, f.index)]
        assert [f.id for f in resumed] == [f.id for f in full[rest_at:]], last_id
        assert [f.event for f in resumed] == [f.event for f in full[rest_at:]]


def test_duplicates_and_events_after_the_end_encode_to_nothing() -> None:
    encoder = AguiEncoder(RUN, THREAD)
    assert encoder.encode(1, EventType.PENDING, {})
    assert encoder.encode(1, EventType.PENDING, {}) == []
    assert encoder.encode(2, EventType.CANCELLED, {})
    assert encoder.finished
    assert encoder.encode(3, EventType.PLANNING, {}) == []


def test_run_agent_input_example_is_valid_ag_ui() -> None:
    """The request body the integration tests send is a valid AG-UI RunAgentInput."""
    body = {
        "threadId": THREAD,
        "runId": "r1",
        "messages": [{"id": "m1", "role": "user", "content": "hi"}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {"options": {"topK": 2}},
        "resume": [
            {
                "interruptId": f"{RUN}:approval:s1:1",
                "status": "resolved",
                "payload": {"approved": True},
            }
        ],
    }
    parsed = RunAgentInput.model_validate(body)
    assert parsed.resume is not None
    assert parsed.resume[0].interrupt_id.endswith(":1")
