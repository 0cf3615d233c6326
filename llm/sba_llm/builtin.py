"""The offline model: an extractive answer from the run's search hits, streamed piece by piece.

It writes in the run's locale (Indonesian or English) with numbered citations
(`sba_core.answers`), and paces its output like a real model so clients see it
arrive token by token. Deterministic: a retried call writes the same text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sba_core.agent_loop import function_name
from sba_core.answers import compose_answer, stream_pieces
from sba_core.tools.names import ToolName
from sba_llm.types import ChatRequest, Completion, Provider, StreamItem, TextDelta, ToolCallOut

BUILTIN_MODEL = "sba-extractive"
SEARCH_FUNCTION = function_name(ToolName.KNOWLEDGE_SEARCH)


class BuiltinModel:
    def __init__(self, *, piece_delay_seconds: float = 0.01) -> None:
        self._delay = piece_delay_seconds

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamItem]:
        search = self._first_search(request)
        if search is not None:
            yield search
            return
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

    @staticmethod
    def _first_search(request: ChatRequest) -> Completion | None:
        """As an agent-loop turn with nothing looked up yet: search the knowledge base for the
        goal first (the only tool this model knows how to use); afterwards, answer."""
        names = {str((t.get("function") or {}).get("name")) for t in request.tools}
        if SEARCH_FUNCTION not in names or any(m.get("role") == "tool" for m in request.messages):
            return None
        arguments = json.dumps({"query": request.question[:2000] or "?", "topK": 5})
        return Completion(
            text="",
            model=BUILTIN_MODEL,
            provider=Provider.BUILTIN,
            finish_reason="tool_calls",
            tool_calls=(ToolCallOut("call_search", SEARCH_FUNCTION, arguments),),
        )
