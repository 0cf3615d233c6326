"""The offline model: an extractive answer from the run's search hits, streamed piece by piece.

It writes in the run's locale (Indonesian or English) with numbered citations
(`sba_core.answers`), and paces its output like a real model so clients see it
arrive token by token. Deterministic: a retried call writes the same text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sba_core.answers import compose_answer, stream_pieces
from sba_llm.types import ChatRequest, Completion, Provider, StreamItem, TextDelta

BUILTIN_MODEL = "sba-extractive"


class BuiltinModel:
    def __init__(self, *, piece_delay_seconds: float = 0.01) -> None:
        self._delay = piece_delay_seconds

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamItem]:
        answer = compose_answer(request.question, list(request.hits), request.locale)
        pieces = stream_pieces(answer.text)
        limited = pieces[: request.max_tokens]
        for piece in limited:
            if self._delay > 0:
                await asyncio.sleep(self._delay)
            yield TextDelta(piece)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in request.messages)
        yield Completion(
            text="".join(limited),
            model=model or BUILTIN_MODEL,
            provider=Provider.BUILTIN,
            finish_reason="stop" if len(limited) == len(pieces) else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(limited),
            citations=answer.citations,
        )
