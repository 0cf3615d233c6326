"""Run events as AG-UI 1.0 events: a pure, deterministic, resumable encoder.

`AguiEncoder.encode` folds one run event (in `seq` order) into a compact run
state and returns the AG-UI events it means, each with an SSE id `<seq>.<n>`
(`n` = 0-based index among the AG-UI events of run event `seq`). What an event
encodes to depends only on the events before it, so a stream can be resumed
anywhere: fold events 1..k silently, then emit everything after the client's
Last-Event-ID (`parse_event_id`).

AG-UI "runs" are segments of our run: a segment ends with RUN_FINISHED (success,
cancelled, or interrupt while awaiting approval/input) or RUN_ERROR; the first
event after an interrupt opens the next segment with a new RUN_STARTED. The
AG-UI runId of segment k comes from `run_ids` (the client's runIds, kept per
thread by the API), else the run's uid (k = 0) or `<uid>-resume-<k>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sba_core.events import EventType

RUN_STARTED: Final = "RUN_STARTED"
RUN_FINISHED: Final = "RUN_FINISHED"
RUN_ERROR: Final = "RUN_ERROR"
STEP_STARTED: Final = "STEP_STARTED"
STEP_FINISHED: Final = "STEP_FINISHED"
TOOL_CALL_START: Final = "TOOL_CALL_START"
TOOL_CALL_ARGS: Final = "TOOL_CALL_ARGS"
TOOL_CALL_END: Final = "TOOL_CALL_END"
TOOL_CALL_RESULT: Final = "TOOL_CALL_RESULT"
STATE_SNAPSHOT: Final = "STATE_SNAPSHOT"
STATE_DELTA: Final = "STATE_DELTA"
TEXT_MESSAGE_START: Final = "TEXT_MESSAGE_START"
TEXT_MESSAGE_CONTENT: Final = "TEXT_MESSAGE_CONTENT"
TEXT_MESSAGE_END: Final = "TEXT_MESSAGE_END"

SEGMENT_END: Final = frozenset({RUN_FINISHED, RUN_ERROR})

APPROVAL_REASON: Final = "approval_required"
INPUT_REASON: Final = "input_required"
APPROVAL_RESPONSE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": 1000},
    },
    "required": ["approved"],
}
INPUT_RESPONSE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}
_APPROVAL_METADATA: Final = (
    "stepId",
    "attempt",
    "action",
    "costEstimate",
    "scope",
    "requires",
    "digest",
    "params",
    "approvers",
    "approverGroups",
    "quorum",
    "requestedAt",
    "expiresAt",
)


# --- ids ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Position:
    """Where a client stands: after AG-UI event `index` of run event `seq`.

    `index` None means after every AG-UI event of run event `seq` (a bare `12`,
    or an id of the plain /events stream).
    """

    seq: int = 0
    index: int | None = None

    def before(self, seq: int, index: int) -> bool:
        """True when the event `<seq>.<index>` comes after this position (send it)."""
        if seq != self.seq:
            return seq > self.seq
        return self.index is not None and index > self.index


def event_id(seq: int, index: int) -> str:
    return f"{seq}.{index}"


def parse_event_id(value: str | None) -> Position:
    """A Last-Event-ID of the AG-UI stream (`12.2`), or of /events (`12`, `<run>:12`).

    Anything unusable means "from the start", as for /events.
    """
    if not value:
        return Position()
    tail = value.strip().rsplit(":", 1)[-1]
    head, dot, index = tail.partition(".")
    if not head.isdigit() or (dot and not index.isdigit()):
        return Position()
    return Position(int(head), int(index) if dot else None)


# --- interrupt ids -----------------------------------------------------------------------


def approval_interrupt_id(run_uid: str, step_id: str, attempt: int) -> str:
    return f"{run_uid}:approval:{step_id}:{attempt}"


def input_interrupt_id(run_uid: str, step_id: str) -> str:
    return f"{run_uid}:input:{step_id}"


@dataclass(frozen=True)
class InterruptRef:
    run_uid: str
    kind: str
    """`approval` or `input`."""
    step_id: str


def parse_interrupt_id(value: str) -> InterruptRef | None:
    parts = value.split(":")
    if len(parts) >= 3 and parts[1] in ("approval", "input") and parts[0] and parts[2]:
        return InterruptRef(parts[0], parts[1], parts[2])
    return None


# --- JSON Patch --------------------------------------------------------------------------


def _pointer(parts: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def json_diff(old: Any, new: Any, path: list[str] | None = None) -> list[dict[str, Any]]:
    """An RFC 6902 patch turning `old` into `new` (objects recursively; arrays by index
    when equally long, else replaced whole)."""
    path = path or []
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": _pointer([*path, key])})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": _pointer([*path, key]), "value": value})
            else:
                ops.extend(json_diff(old[key], value, [*path, key]))
        return ops
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out: list[dict[str, Any]] = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(json_diff(a, b, [*path, str(i)]))
        return out
    return [{"op": "replace", "path": _pointer(path), "value": new}]


# --- the encoder -------------------------------------------------------------------------


@dataclass(frozen=True)
class AguiFrame:
    """One AG-UI event with its SSE id and the segment (AG-UI run) it belongs to."""

    seq: int
    index: int
    segment: int
    event: dict[str, Any]

    @property
    def id(self) -> str:
        return event_id(self.seq, self.index)

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def ends_segment(self) -> bool:
        return self.type in SEGMENT_END


@dataclass
class _Step:
    id: str
    tool: str
    params: dict[str, Any] = field(default_factory=dict)
    phase: str = "pending"
    attempt: int = 0
    summary: str | None = None
    progress: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "tool": self.tool,
            "phase": self.phase,
            "attempt": self.attempt,
        }
        if self.summary is not None:
            out["summary"] = self.summary
        if self.progress is not None:
            out["progress"] = self.progress
        return out


class AguiEncoder:
    def __init__(
        self, run_uid: str, thread_id: str, run_ids: Mapping[int, str] | None = None
    ) -> None:
        self.run_uid = run_uid
        self.thread_id = thread_id
        self.run_ids: dict[int, str] = dict(run_ids or {})
        self.segment = 0
        self.open = False
        """Inside an AG-UI run (after RUN_STARTED, before RUN_FINISHED/RUN_ERROR)."""
        self.interrupted = False
        self.finished = False
        self.last_seq = 0
        self._phase = "pending"
        self._reason: str | None = None
        self._current: str | None = None
        self._steps: dict[str, _Step] = {}
        self._opened_calls: set[str] = set()
        self._resulted_calls: set[str] = set()
        self._open_steps: set[str] = set()
        self._sent_state: dict[str, Any] | None = None
        self._open_messages: dict[str, str] = {}
        """Streaming model text: step id -> its open TEXT_MESSAGE's id."""
        self._streamed_steps: set[str] = set()

    # -- ids --------------------------------------------------------------------------------

    def agui_run_id(self, segment: int | None = None) -> str:
        k = self.segment if segment is None else segment
        default = self.run_uid if k == 0 else f"{self.run_uid}-resume-{k}"
        return self.run_ids.get(k, default)

    def tool_call_id(self, step_id: str) -> str:
        return f"{self.run_uid}/{step_id}"

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The compact run state STATE_SNAPSHOT/STATE_DELTA carry."""
        return {
            "runId": self.run_uid,
            "phase": self._phase,
            "reason": self._reason,
            "currentStep": self._current,
            "steps": [s.state() for s in self._steps.values()],
        }

    def _step(self, payload: Mapping[str, Any]) -> _Step:
        step_id = str(payload.get("stepId", ""))
        step = self._steps.get(step_id)
        if step is None:
            step = _Step(step_id, str(payload.get("tool") or payload.get("action") or ""))
            self._steps[step_id] = step
        return step

    # -- encoding ---------------------------------------------------------------------------

    def encode(
        self,
        seq: int,
        type_: str,
        payload: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> list[AguiFrame]:
        """The AG-UI events of run event `seq` (events must come in seq order, each once)."""
        if seq <= self.last_seq or self.finished:
            return []  # a duplicate or anything after the terminal event: nothing
        self.last_seq = seq
        body = dict(payload or {})
        out: list[dict[str, Any]] = []
        if type_ == EventType.APPROVAL_ANSWERED and self.interrupted:
            # One answer of a quorum: the run still waits, the interrupt stands.
            return []
        if not self.open:
            if self.interrupted:
                self.segment += 1
                self.interrupted = False
            out.append(
                {"type": RUN_STARTED, "threadId": self.thread_id, "runId": self.agui_run_id()}
            )
            self.open = True
        handler = getattr(self, f"_on_{type_}", None)
        if handler is not None:
            handler(body, out)
        if self._sent_state is None:
            self._sent_state = self.state()
            out.insert(1 if out and out[0]["type"] == RUN_STARTED else 0, self._snapshot())
        else:
            patch = json_diff(self._sent_state, self.state())
            if patch:
                self._sent_state = self.state()
                # Before the segment's closing event, so the client's state is final first.
                at = len(out) - 1 if out and out[-1]["type"] in SEGMENT_END else len(out)
                out.insert(at, {"type": STATE_DELTA, "delta": patch})
        if out and out[-1]["type"] in SEGMENT_END:
            self.open = False
        stamp = int(ts.timestamp() * 1000) if ts is not None else None
        frames = []
        for i, event in enumerate(out):
            if stamp is not None:
                event["timestamp"] = stamp
            frames.append(AguiFrame(seq, i, self.segment, event))
        return frames

    def _snapshot(self) -> dict[str, Any]:
        return {"type": STATE_SNAPSHOT, "snapshot": self.state()}

    # -- per run event (`_on_<type>`) -------------------------------------------------------

    def _on_pending(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._phase = "pending"

    def _on_queued(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._reason = "Queued"

    def _on_planning(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._phase, self._reason = "planning", None

    def _on_plan_ready(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        for raw in body.get("steps") or []:
            if isinstance(raw, dict) and raw.get("id"):
                step = self._steps.setdefault(
                    str(raw["id"]), _Step(str(raw["id"]), str(raw.get("tool", "")))
                )
                params = raw.get("params")
                step.params = dict(params) if isinstance(params, dict) else {}

    def _on_executing(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._phase, self._reason = "executing", None

    def _open_call(self, step: _Step, out: list[dict[str, Any]]) -> None:
        """TOOL_CALL_START/ARGS/END, once per step: the call is what the plan proposed."""
        if step.id in self._opened_calls:
            return
        self._opened_calls.add(step.id)
        call = self.tool_call_id(step.id)
        out.append({"type": TOOL_CALL_START, "toolCallId": call, "toolCallName": step.tool})
        args = json.dumps(step.params, sort_keys=True, separators=(",", ":"))
        out.append({"type": TOOL_CALL_ARGS, "toolCallId": call, "delta": args})
        out.append({"type": TOOL_CALL_END, "toolCallId": call})

    def _result(self, step: _Step, content: str, out: list[dict[str, Any]]) -> None:
        if step.id not in self._opened_calls or step.id in self._resulted_calls:
            return
        self._resulted_calls.add(step.id)
        call = self.tool_call_id(step.id)
        out.append(
            {
                "type": TOOL_CALL_RESULT,
                "messageId": f"{call}/result",
                "toolCallId": call,
                "content": content or "(no summary)",
                "role": "tool",
            }
        )

    def _finish_step(self, step: _Step, out: list[dict[str, Any]]) -> None:
        if step.id in self._open_steps:
            self._open_steps.discard(step.id)
            out.append({"type": STEP_FINISHED, "stepName": step.id})

    def _on_step_started(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        step = self._step(body)
        step.phase, step.attempt = "running", int(body.get("attempt") or step.attempt + 1)
        self._current, self._reason = step.id, None
        if step.id not in self._open_steps:
            self._open_steps.add(step.id)
            out.append({"type": STEP_STARTED, "stepName": step.id})
        self._open_call(step, out)

    def _on_step_progress(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        # Shown through the state (a STATE_DELTA follows): the latest report of the step.
        step = self._step(body)
        progress: dict[str, Any] = {"message": str(body.get("message") or "")}
        if isinstance(body.get("percent"), int | float):
            progress["percent"] = body["percent"]
        step.progress = progress

    def _on_rate_limited(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._step(body)
        self._reason = "RateLimited"

    def message_id(self, step_id: str, attempt: int) -> str:
        return f"{self.run_uid}/{step_id}/a{attempt}"

    def _on_token(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """A batch of a model step's text: TEXT_MESSAGE_START once, then a CONTENT delta."""
        text = body.get("text")
        if not isinstance(text, str) or not text:
            return
        step_id = str(body.get("stepId", ""))
        attempt = body.get("attempt")
        message = self._open_messages.get(step_id)
        if message is None:
            message = self.message_id(step_id, attempt if isinstance(attempt, int) else 1)
            self._open_messages[step_id] = message
            out.append({"type": TEXT_MESSAGE_START, "messageId": message, "role": "assistant"})
        self._streamed_steps.add(step_id)
        out.append({"type": TEXT_MESSAGE_CONTENT, "messageId": message, "delta": text})

    def _end_message(self, step_id: str, out: list[dict[str, Any]]) -> None:
        message = self._open_messages.pop(step_id, None)
        if message is not None:
            out.append({"type": TEXT_MESSAGE_END, "messageId": message})

    def _end_messages(self, out: list[dict[str, Any]]) -> None:
        for step_id in sorted(self._open_messages):
            self._end_message(step_id, out)

    def _on_step_succeeded(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._end_message(str(body.get("stepId", "")), out)
        step = self._step(body)
        summary = body.get("summary")
        step.phase, step.summary = "succeeded", summary if isinstance(summary, str) else None
        self._finish_step(step, out)
        self._open_call(step, out)  # a user.input step never "started"
        self._result(step, step.summary or "", out)

    def _on_step_failed(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._end_message(str(body.get("stepId", "")), out)
        step = self._step(body)
        retryable = bool(body.get("retryable"))
        step.phase = "backoff" if retryable else "failed"
        self._finish_step(step, out)
        if not retryable:
            self._result(step, f"failed: {body.get('error') or body.get('reason') or ''}", out)

    def _on_step_retrying(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._step(body).phase = "backoff"

    def _on_step_dead_lettered(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        step = self._step(body)
        step.phase = "failed"
        self._finish_step(step, out)
        self._result(step, f"failed: {body.get('lastError') or 'attempts exhausted'}", out)

    def _on_step_skipped(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        step = self._step(body)
        step.phase = "skipped"
        self._finish_step(step, out)
        self._result(step, f"skipped: {body.get('reason') or ''}", out)

    def _interrupt(self, interrupt: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._close_steps(out)  # clients refuse RUN_FINISHED while a step is open
        out.append(
            {
                "type": RUN_FINISHED,
                "threadId": self.thread_id,
                "runId": self.agui_run_id(),
                "outcome": {"type": "interrupt", "interrupts": [interrupt]},
            }
        )
        self.interrupted = True

    def _on_awaiting_approval(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        step = self._step(body)
        params = body.get("params")
        if not step.params and isinstance(params, dict):
            step.params = dict(params)
        step.phase = "awaiting_approval"
        self._phase, self._current = "awaiting_approval", step.id
        self._open_call(step, out)
        attempt = int(body.get("attempt") or 1)
        interrupt: dict[str, Any] = {
            "id": approval_interrupt_id(self.run_uid, step.id, attempt),
            "reason": APPROVAL_REASON,
            "message": f"Approve {body.get('action') or step.tool} (step {step.id})?",
            "toolCallId": self.tool_call_id(step.id),
            "responseSchema": APPROVAL_RESPONSE_SCHEMA,
            "metadata": {k: body[k] for k in _APPROVAL_METADATA if k in body},
        }
        if isinstance(body.get("expiresAt"), str):
            interrupt["expiresAt"] = body["expiresAt"]
        self._interrupt(interrupt, out)

    def _on_approval_answered(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """Nothing to show beyond the decision events that follow."""

    def _on_approved(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._step(body).phase = "pending"
        self._phase = "executing"

    def _on_denied(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._step(body).phase = "denied"
        self._phase = "executing"

    def _on_expired(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._step(body).phase = "expired"
        self._phase = "executing"

    def _on_awaiting_input(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        step = self._step(body)
        if not step.tool:
            step.tool = "user.input"
        prompt = body.get("prompt")
        if not step.params and isinstance(prompt, str):
            step.params = {"prompt": prompt}
        step.phase, self._current, self._reason = "awaiting_input", step.id, "AwaitingInput"
        self._open_call(step, out)
        interrupt: dict[str, Any] = {
            "id": input_interrupt_id(self.run_uid, step.id),
            "reason": INPUT_REASON,
            "toolCallId": self.tool_call_id(step.id),
            "responseSchema": INPUT_RESPONSE_SCHEMA,
            "metadata": {"stepId": step.id},
        }
        if isinstance(prompt, str) and prompt:
            interrupt["message"] = prompt
        self._interrupt(interrupt, out)

    def _on_input_received(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._step(body).phase = "running"
        self._reason = None

    def _close_steps(self, out: list[dict[str, Any]]) -> None:
        self._end_messages(out)
        for step_id in sorted(self._open_steps):
            out.append({"type": STEP_FINISHED, "stepName": step_id})
        self._open_steps.clear()

    def _on_completed(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._phase, self._reason, self._current = "completed", None, None
        self.finished = True
        self._close_steps(out)
        link = body.get("artifactUrl") or (
            f"/api/v1/runs/{self.run_uid}/artifacts/{body['artifactId']}"
            if body.get("artifactId")
            else None
        )
        answer_step = body.get("answerStep")
        if answer_step in self._streamed_steps:
            # The answer already reached the client token by token: only the artifact is new.
            text = f"Artifact: {link}" if link else ""
        else:
            text = str(body.get("answer") or body.get("summary") or "The run completed.")
            if link:
                text += f"\n\nArtifact: {link}"
        if text:
            message = f"{self.run_uid}/result"
            out.append({"type": TEXT_MESSAGE_START, "messageId": message, "role": "assistant"})
            out.append({"type": TEXT_MESSAGE_CONTENT, "messageId": message, "delta": text})
            out.append({"type": TEXT_MESSAGE_END, "messageId": message})
        out.append(
            {
                "type": RUN_FINISHED,
                "threadId": self.thread_id,
                "runId": self.agui_run_id(),
                "result": body,
                "outcome": {"type": "success"},
            }
        )

    def _on_failed(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._phase, self._current = "failed", None
        self._reason = str(body.get("reason") or "Failed")
        self.finished = True
        self._close_steps(out)
        error: dict[str, Any] = {
            "type": RUN_ERROR,
            "message": str(body.get("message") or body.get("reason") or "the run failed"),
            "code": self._reason,
        }
        out.append(error)

    def _on_cancelled(self, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._phase, self._reason, self._current = "cancelled", "Cancelled", None
        self.finished = True
        for step in self._steps.values():
            if step.phase not in ("succeeded", "failed", "skipped"):
                step.phase = "cancelled"
        self._close_steps(out)
        out.append(
            {
                "type": RUN_FINISHED,
                "threadId": self.thread_id,
                "runId": self.agui_run_id(),
                "outcome": {"type": "cancelled"},
            }
        )
