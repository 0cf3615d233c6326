"""Model steps: token batching, the circuit breaker, the fallback chain, and AG-UI deltas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from sba_api.services.token_stream import TokenBatcher
from sba_core.agui import AguiEncoder
from sba_core.answers import SourceHit
from sba_core.events import EventType
from sba_llm import (
    BuiltinModel,
    ChatRequest,
    CircuitBreaker,
    CircuitState,
    Completion,
    ModelCallError,
    ModelConfig,
    ModelRouter,
    ModelsUnavailable,
    PartialAnswer,
    Provider,
    StreamItem,
    TextDelta,
)

EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
HITS = [
    SourceHit(
        "d1",
        "c1",
        "Refund policy",
        "Customers may return damaged goods within 30 days for a full refund.",
        0.9,
    )
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the token batcher ----------------------------------------------------------------------


async def test_first_piece_goes_out_at_once_then_pieces_are_batched() -> None:
    written: list[tuple[int, str]] = []

    async def flush(offset: int, text: str) -> None:
        written.append((offset, text))

    batcher = TokenBatcher(flush, interval=0.05)
    await batcher.add("Hello ")
    assert written == [(0, "Hello ")]
    for piece in ("big ", "wide ", "world"):
        await batcher.add(piece)
    assert written == [(0, "Hello ")]  # still inside the 50 ms window
    await asyncio.sleep(0.08)
    assert written == [(0, "Hello "), (6, "big wide world")]
    await batcher.close()
    assert batcher.offset == len("Hello big wide world")
    assert batcher.events == 2


async def test_a_resumed_batcher_continues_the_offsets() -> None:
    written: list[tuple[int, str]] = []

    async def flush(offset: int, text: str) -> None:
        written.append((offset, text))

    batcher = TokenBatcher(flush, interval=10.0, start_offset=42)
    await batcher.add("more")
    await batcher.add(" text")
    await batcher.close()
    assert written == [(42, "more"), (46, " text")]
    assert "".join(t for _, t in written) == "more text"


# -- the circuit breaker --------------------------------------------------------------------


def test_circuit_opens_after_the_threshold_and_half_opens_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown_seconds=30, clock=clock)
    breaker.failure("m")
    assert breaker.allow("m")
    breaker.failure("m")
    assert breaker.state("m") is CircuitState.OPEN
    assert not breaker.allow("m")
    clock.now = 31
    assert breaker.state("m") is CircuitState.HALF_OPEN
    assert breaker.allow("m")  # one trial ...
    assert not breaker.allow("m")  # ... at a time
    breaker.failure("m")  # the trial failed: open again for a full cooldown
    assert breaker.state("m") is CircuitState.OPEN
    clock.now = 62
    assert breaker.allow("m")
    breaker.success("m")
    assert breaker.state("m") is CircuitState.CLOSED
    assert breaker.open_circuits() == []


# -- the router -----------------------------------------------------------------------------


class Scripted:
    """A provider whose models answer as scripted: text, an error, or an error mid-answer."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamItem]:
        self.calls.append(model)
        what = self.script[model]
        if isinstance(what, ModelCallError):
            raise what
        text, fail_after = what if isinstance(what, tuple) else (what, None)
        for i, word in enumerate(text.split(" ")):
            if fail_after is not None and i == fail_after:
                raise ModelCallError("connection reset", retryable=True)
            yield TextDelta(word + " ")
        yield Completion(text=text, model=model, provider=Provider.OPENAI, completion_tokens=3)


def _router(provider: Scripted, breaker: CircuitBreaker | None = None) -> ModelRouter:
    router = ModelRouter(breaker=breaker or CircuitBreaker(threshold=1, cooldown_seconds=60))
    router._provider = lambda config: provider  # type: ignore[method-assign]
    return router


CONFIG = ModelConfig(provider=Provider.OPENAI, model="main", fallback_model="spare", base_url="x")


async def _drain(stream: AsyncIterator[StreamItem]) -> tuple[str, Completion]:
    text = ""
    async for item in stream:
        if isinstance(item, TextDelta):
            text += item.text
        else:
            return text, item
    raise AssertionError("no completion")


async def test_a_failing_model_falls_back_and_the_reason_is_kept() -> None:
    provider = Scripted({"main": ModelCallError("HTTP 503", retryable=True), "spare": "hi there"})
    router = _router(provider)
    text, done = await _drain(router.stream(CONFIG, ChatRequest(messages=[])))
    assert text == "hi there "
    assert done.model == "spare"
    assert done.fallback_reasons == ("model main: HTTP 503",)
    # The main model's circuit is open now: the next call goes straight to the spare.
    provider.calls.clear()
    _, again = await _drain(router.stream(CONFIG, ChatRequest(messages=[])))
    assert provider.calls == ["spare"]
    assert "circuit open" in again.fallback_reasons[0]


async def test_every_model_failing_is_unavailable_with_all_reasons() -> None:
    provider = Scripted(
        {
            "main": ModelCallError("HTTP 500", retryable=True),
            "spare": ModelCallError("HTTP 400: bad", retryable=False),
        }
    )
    with pytest.raises(ModelsUnavailable) as caught:
        await _drain(_router(provider).stream(CONFIG, ChatRequest(messages=[])))
    assert caught.value.reasons == ("model main: HTTP 500", "model spare: HTTP 400: bad")
    assert caught.value.retryable


async def test_a_model_failing_mid_answer_is_a_partial_answer() -> None:
    provider = Scripted({"main": ("one two three", 2), "spare": "never"})
    with pytest.raises(PartialAnswer) as caught:
        await _drain(_router(provider).stream(CONFIG, ChatRequest(messages=[])))
    assert caught.value.written == len("one two ")
    assert provider.calls == ["main"]  # no fallback: text was already delivered


async def test_the_builtin_model_streams_an_extractive_answer_with_citations() -> None:
    router = ModelRouter(builtin=BuiltinModel(piece_delay_seconds=0))
    request = ChatRequest(
        messages=[{"role": "user", "content": "What is the refund policy for damaged goods?"}],
        question="What is the refund policy for damaged goods?",
        hits=HITS,
        locale="id",
    )
    pieces: list[str] = []
    done: Completion | None = None
    async for item in router.stream(ModelConfig(), request):
        if isinstance(item, TextDelta):
            pieces.append(item.text)
        else:
            done = item
    assert done is not None
    assert len(pieces) > 10  # streamed piece by piece
    assert "".join(pieces) == done.text
    assert done.text.startswith("Berdasarkan basis pengetahuan")
    assert "30 days" in done.text
    assert "[1]" in done.text
    assert [c.title for c in done.citations] == ["Refund policy"]
    assert done.provider is Provider.BUILTIN
    assert done.completion_tokens == len(pieces)


# -- AG-UI ----------------------------------------------------------------------------------

RUN = "0b9f4c1e-7d0a-4a59-9d6f-3c2a1e5b8f00"


def _encode(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    encoder = AguiEncoder(RUN, "thread-1")
    out: list[dict[str, Any]] = []
    for seq, (type_, payload) in enumerate(events, start=1):
        for frame in encoder.encode(seq, type_, payload):
            EVENT_ADAPTER.validate_python(frame.event)
            out.append(frame.event)
    return out


def _token(offset: int, text: str, attempt: int = 1) -> tuple[str, dict[str, Any]]:
    body = {"stepId": "answer", "attempt": attempt, "offset": offset, "text": text}
    return (EventType.TOKEN, body)


STREAMED = [
    (EventType.PENDING, {}),
    (EventType.PLANNING, {}),
    (
        EventType.PLAN_READY,
        {"steps": [{"id": "answer", "tool": "llm.generate", "params": {"prompt": "{goal}"}}]},
    ),
    (EventType.EXECUTING, {}),
    (EventType.STEP_STARTED, {"stepId": "answer", "tool": "llm.generate", "attempt": 1}),
    _token(0, "Refunds are "),
    _token(12, "possible [1]."),
    (
        EventType.STEP_SUCCEEDED,
        {"stepId": "answer", "tool": "llm.generate", "attempt": 1, "summary": "wrote"},
    ),
    (
        EventType.COMPLETED,
        {"summary": "wrote", "answer": "Refunds are possible [1].", "answerStep": "answer"},
    ),
]


def test_tokens_become_text_message_deltas_and_the_answer_is_not_repeated() -> None:
    events = _encode(STREAMED)
    types = [e["type"] for e in events]
    start = types.index("TEXT_MESSAGE_START")
    assert types[start : start + 3] == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
    ]
    deltas = [e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert deltas == ["Refunds are ", "possible [1]."]  # once, in order: nothing at the end
    message = events[start]["messageId"]
    assert message == f"{RUN}/answer/a1"
    end = types.index("TEXT_MESSAGE_END")
    assert events[end]["messageId"] == message
    assert end < types.index("STEP_FINISHED", start)  # closed before the step finishes
    assert types[-1] == "RUN_FINISHED"


def test_an_answer_that_did_not_stream_is_sent_whole_at_the_end() -> None:
    events = _encode([e for e in STREAMED if e[0] != EventType.TOKEN])
    deltas = [e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert deltas == ["Refunds are possible [1]."]


def test_a_failed_attempt_closes_its_message_and_the_retry_opens_another() -> None:
    events = _encode(
        [
            *STREAMED[:6],
            (
                EventType.STEP_FAILED,
                {"stepId": "answer", "tool": "llm.generate", "retryable": True, "error": "x"},
            ),
            (EventType.STEP_STARTED, {"stepId": "answer", "tool": "llm.generate", "attempt": 2}),
            _token(0, "Refunds are possible.", attempt=2),
        ]
    )
    starts = [e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_START"]
    ends = [e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_END"]
    assert starts == [f"{RUN}/answer/a1", f"{RUN}/answer/a2"]
    assert ends == [f"{RUN}/answer/a1"]
    assert json.dumps(events)  # all plain JSON
