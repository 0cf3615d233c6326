"""The model gateway: an llm.generate step's model call, made by the API for the step's pod.

The pod asks with its step token and gets the finished text; everything a provider
needs stays here: the tenant's model configuration and key, the token quota
(`quotas.tokensPerDay`, checked before each call, usage added after it), the
fallback chain and circuit breakers (`sba_llm`). While the model writes, its text
goes to the run's clients as `token` events (`TokenBatcher`, then Redis fan-out).

Exactly-once streaming: before a call the gateway reads how much of this attempt's
answer is already in `token` events, and skips that much of the new generation.
A pod that retries after the API died mid-answer, or a model that failed
mid-answer and is asked again, therefore never shows a reader the same text twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final
from uuid import UUID

from pydantic import ValidationError
from redis.asyncio import Redis

from sba_api.errors import ApiError, Forbidden, ServiceUnavailable
from sba_api.services import agent_turns
from sba_api.services._boundary import store_boundary
from sba_api.services.gateway import GatewayService
from sba_api.services.model_config import ModelConfigSource
from sba_api.services.step_events import add_step_event
from sba_api.services.token_stream import TokenBatcher
from sba_core.answers import answer_language, hits_from_results, render_prompt
from sba_core.events import EventType
from sba_core.step_token import StepClaims
from sba_core.tools.contracts import (
    LlmCitation,
    LlmGenerateParams,
    LlmGenerateResult,
    LlmToolCall,
    LlmUsage,
)
from sba_core.tools.names import ToolName
from sba_llm import (
    ChatRequest,
    Completion,
    ModelCallError,
    ModelConfig,
    ModelRouter,
    ModelsUnavailable,
    PartialAnswer,
    Provider,
    TextDelta,
)
from sba_store.events import EventRepository
from sba_store.plans import TokenUsageRepository
from sba_store.records import NewEvent
from sba_store.runs import RunRepository
from sba_store.tool_calls import ToolCallRepository

log = logging.getLogger(__name__)

MAX_PARTIAL_RETRIES: Final = 2
_SYSTEM: Final = {
    "en": "You are the business assistant of this tenant. Answer the user's request in"
    " English, using only the results below where they are relevant, and cite them as [n].",
    "id": "Anda adalah asisten bisnis tenant ini. Jawab permintaan pengguna dalam bahasa"
    " Indonesia, hanya berdasarkan hasil di bawah ini bila relevan, dan kutip sebagai [n].",
}


class TokenQuotaExceeded(Forbidden):
    code = "token_quota_exceeded"


class ModelUnavailable(ServiceUnavailable):
    code = "model_unavailable"


class ModelRefused(ApiError):
    """The provider refused the request for good (4xx): the step fails, no retry."""

    status = 422
    code = "model_refused"


class ModelGatewayService:
    def __init__(
        self,
        gateway: GatewayService,
        router: ModelRouter,
        configs: ModelConfigSource,
        *,
        runs: RunRepository,
        tool_calls: ToolCallRepository,
        events: EventRepository,
        token_usage: TokenUsageRepository,
        redis: Redis,
        flush_seconds: float = 0.05,
        on_tokens: Callable[[str, int], None] | None = None,
    ) -> None:
        self._gateway = gateway
        self._router = router
        self._configs = configs
        self._runs = runs
        self._tool_calls = tool_calls
        self._events = events
        self._usage = token_usage
        self._redis = redis
        self._flush_seconds = flush_seconds
        self._on_tokens = on_tokens
        """Called with (tenant, tokens) after each call: the API's llm_tokens_total."""
        self._locks: dict[tuple[str, str, int], asyncio.Lock] = {}

    async def generate(self, claims: StepClaims) -> LlmGenerateResult:
        if claims.tool != ToolName.LLM_GENERATE:
            raise Forbidden(f"a {claims.tool!r} step may not call the model gateway")
        key = (claims.run_id, claims.step_id, claims.attempt)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            # One generation per attempt at a time in this replica: a retried request waits
            # for the first instead of racing it for the same offsets.
            async with lock:
                return await self._generate(claims)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    async def _generate(self, claims: StepClaims) -> LlmGenerateResult:
        call = await self._gateway.tool_call(claims)
        try:
            params = LlmGenerateParams.model_validate(call.params)
        except ValidationError as exc:
            raise ModelRefused(f"llm.generate params invalid: {exc.errors()[0]['msg']}") from exc
        run_id = UUID(claims.run_id)
        with store_boundary("read the run and its results"):
            run = await self._runs.get(run_id, tenant_id=claims.tenant)
            outcomes = await self._tool_calls.latest_outcomes(run_id, tenant_id=claims.tenant)
        goal = run.prompt if run is not None else ""
        mine = {
            step_id: record
            for step_id, record in sorted(outcomes.items())
            if step_id != claims.step_id and record.tenant_id == claims.tenant
        }
        results = {
            step_id: record.result
            for step_id, record in mine.items()
            if record.success and (params.sources is None or step_id in params.sources)
        }
        terms = await self._configs.for_tenant(claims.tenant)
        tools = (
            agent_turns.turn_tools(await self._gateway.registry_for(claims), terms.allowed_tools)
            if params.agent
            else None
        )
        if tools is not None:
            request = agent_turns.turn_request(params, goal, claims.step_id, mine, tools)
        else:
            request = self._request(params, goal, results)
        day = datetime.now(UTC).date()
        # The builtin model costs nothing: its output is neither metered nor limited.
        metered = terms.config.provider is not Provider.BUILTIN
        used = 0
        if metered:
            with store_boundary("read the tenant's token usage"):
                used = await self._usage.tokens_on(claims.tenant, day)
        if metered and used >= terms.tokens_per_day:
            raise TokenQuotaExceeded(
                f"tenant {claims.tenant!r} has used {used} of its {terms.tokens_per_day} model"
                f" tokens for {day.isoformat()} (UTC; quotas.tokensPerDay)"
            )
        with store_boundary("read the streamed answer's progress"):
            streamed = await self._events.streamed_chars(
                run_id, claims.step_id, claims.attempt, tenant_id=claims.tenant
            )
        batcher = TokenBatcher(
            lambda offset, text: self._write_tokens(claims, offset, text),
            interval=self._flush_seconds,
            start_offset=streamed,
        )
        try:
            completion = await self._stream(terms.config, request, params, batcher, skip=streamed)
            calls: list[LlmToolCall] = []
            for attempt in range(agent_turns.MAX_REASKS + 1 if tools is not None else 0):
                assert tools is not None
                calls, problems = agent_turns.check_calls(completion, tools)
                if not problems:
                    break
                if attempt == agent_turns.MAX_REASKS:
                    raise ModelRefused(
                        "the model kept proposing calls the tools' contracts refuse: "
                        + "; ".join(problems)
                    )
                # Tell the model what was wrong with its calls and ask again (bounded).
                request = agent_turns.reask(request, completion, problems)
                completion = await self._stream(terms.config, request, params, batcher, skip=0)
        except BaseException:
            await batcher.abandon()
            raise
        await batcher.close()
        if metered:
            await self._meter(claims.tenant, day, completion)
        log.info(
            "model call: %s (%s) wrote %d chars, %d+%d tokens, %d token events",
            completion.model,
            completion.provider,
            len(completion.text),
            completion.prompt_tokens,
            completion.completion_tokens,
            batcher.events,
        )
        return LlmGenerateResult(
            text=completion.text,
            model=completion.model,
            provider=str(completion.provider),
            finish_reason=completion.finish_reason,
            usage=LlmUsage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            ),
            citations=[
                LlmCitation(
                    number=c.number, document_id=c.document_id, chunk_id=c.chunk_id, title=c.title
                )
                for c in completion.citations
            ],
            fallback_reasons=list(completion.fallback_reasons),
            tool_calls=calls,
        )

    def _request(
        self, params: LlmGenerateParams, goal: str, results: Mapping[str, Any]
    ) -> ChatRequest:
        language = answer_language(params.locale)
        user = render_prompt(params.prompt, goal=goal, results=results)
        if results and "{results}" not in params.prompt and "{step." not in params.prompt:
            user += "\n\n" + render_prompt("{results}", goal=goal, results=results)
        system = (
            render_prompt(params.system, goal=goal, results=results)
            if params.system
            else _SYSTEM[language]
        )
        return ChatRequest(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            question=goal,
            hits=hits_from_results(results),
            locale=params.locale,
        )

    async def _stream(
        self,
        config: ModelConfig,
        request: ChatRequest,
        params: LlmGenerateParams,
        batcher: TokenBatcher,
        *,
        skip: int,
    ) -> Completion:
        """One generation into `batcher`; its first `skip` characters were streamed already
        (by an earlier request for this attempt, or before the model failed mid-answer)."""
        written_before = batcher.offset - skip
        for round_ in range(MAX_PARTIAL_RETRIES + 1):
            position = 0
            try:
                async for item in self._router.stream(config, request, model=params.model):
                    if isinstance(item, TextDelta):
                        start, position = position, position + len(item.text)
                        if position <= skip:
                            continue
                        await batcher.add(item.text[max(skip - start, 0) :])
                    else:
                        return item
            except PartialAnswer as exc:
                await batcher.close()
                skip = batcher.offset - written_before
                log.warning("model failed mid-answer (round %d): %s; asking again", round_, exc)
                continue
            except ModelsUnavailable as exc:
                if exc.retryable:
                    raise ModelUnavailable(str(exc)) from exc
                raise ModelRefused(str(exc)) from exc
            except ModelCallError as exc:
                raise ModelUnavailable(str(exc)) from exc
        raise ModelUnavailable("the model kept failing mid-answer")

    async def _write_tokens(self, claims: StepClaims, offset: int, text: str) -> None:
        event = NewEvent(
            dedupe_key=f"token:{claims.step_id}:{claims.attempt}:{offset}",
            type=str(EventType.TOKEN),
            payload={
                "stepId": claims.step_id,
                "attempt": claims.attempt,
                "offset": offset,
                "text": text,
            },
        )
        await add_step_event(self._events, self._redis, claims, event, "record streamed tokens")

    async def _meter(self, tenant: str, day: date, completion: Completion) -> None:
        tokens = completion.total_tokens
        if tokens <= 0:
            return
        with store_boundary("meter model tokens"):
            await self._usage.add(tenant, day, tokens)
        if self._on_tokens is not None:
            self._on_tokens(tenant, tokens)
