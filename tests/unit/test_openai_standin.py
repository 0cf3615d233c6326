"""The OpenAI stand-in, driven by the official `openai` SDK: if the SDK parses it, it speaks
the documented protocol."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from sba_devstack.openai_standin import OpenAIStandIn

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn("127.0.0.1", 0) as server:
        yield server


def client_for(standin: OpenAIStandIn, *, api_key: str = "sk-any", retries: int = 0) -> Any:
    return openai.AsyncOpenAI(base_url=standin.base_url, api_key=api_key, max_retries=retries)


async def control(standin: OpenAIStandIn, method: str, path: str, body: Any = None) -> Any:
    url = standin.base_url.removesuffix("/v1") + path
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def script(
    standin: OpenAIStandIn, *replies: dict[str, Any], model: str | None = None
) -> None:
    await control(standin, "POST", "/_control/script", {"replies": list(replies), "model": model})


async def collect(stream: Any) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def test_non_streaming_completion_has_the_documented_shape(standin: OpenAIStandIn) -> None:
    await script(standin, {"content": "Paris is the capital."})
    async with client_for(standin) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Paris is the capital."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    # 6 words and "?" in the prompt; four pieces emitted.
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 4)
    assert completion.usage.total_tokens == 11


async def test_unscripted_reply_echoes_the_last_user_message(standin: OpenAIStandIn) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    async with client_for(standin) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert completion.choices[0].message.content == "You asked: second question"


async def test_streamed_text_joins_to_the_content_and_ends_with_usage(
    standin: OpenAIStandIn,
) -> None:
    content = "The quick brown fox\njumps over  the lazy dog."
    await script(standin, {"content": content})
    async with client_for(standin) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = await collect(stream)
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.created for c in chunks} == {chunks[0].created}
    first, *middle, finish, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    pieces = [c.choices[0].delta.content for c in middle]
    assert pieces == [
        "The ",
        "quick ",
        "brown ",
        "fox\n",
        "jumps ",
        "over  ",
        "the ",
        "lazy ",
        "dog.",
    ]
    assert "".join(p or "" for p in pieces) == content
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert all(c.usage is None for c in chunks[:-1])
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(pieces)
    assert usage_chunk.usage.prompt_tokens == 7


async def test_stream_without_include_usage_sends_no_usage_chunk(standin: OpenAIStandIn) -> None:
    await script(standin, {"content": "short answer"})
    async with client_for(standin) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, stream=True
        )
        chunks = await collect(stream)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_streamed_tool_calls_accumulate_to_exact_name_and_arguments(
    standin: OpenAIStandIn,
) -> None:
    arguments = {"contacts": [{"email": "ada@example.com", "name": "Ada"}], "deals": []}
    await script(
        standin,
        {"tool_calls": [{"name": "crm_sync", "arguments": arguments}, {"name": "noop"}]},
    )
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    async with client_for(standin) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, stream=True
        )
        chunks = await collect(stream)
    for chunk in chunks:
        state.handle_chunk(chunk)
    fragments = [
        call.function.arguments
        for c in chunks
        for call in (c.choices[0].delta.tool_calls or [])
        if call.id is None and call.function is not None
    ]
    assert len(fragments) > 2  # the first call's arguments really arrive in pieces
    choice = state.get_final_completion().choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["crm_sync", "noop"]
    assert json.loads(calls[0].function.arguments) == arguments
    assert json.loads(calls[1].function.arguments) == {}
    assert calls[0].id != calls[1].id
    assert all(c.id.startswith("call_") for c in calls)


async def test_non_streaming_tool_calls(standin: OpenAIStandIn) -> None:
    await script(standin, {"tool_calls": [{"name": "lookup", "arguments": {"q": "ü"}}]})
    async with client_for(standin) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"q": "ü"}


async def test_sdk_retry_gets_the_reply_after_a_scripted_500(standin: OpenAIStandIn) -> None:
    await script(standin, {"error": {"status": 500}}, {"content": "recovered"})
    async with client_for(standin, retries=1) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert completion.choices[0].message.content == "recovered"
    requests = (await control(standin, "GET", "/_control/requests"))["requests"]
    assert len(requests) == 2
    assert [r["body"]["messages"] for r in requests] == [QUESTION, QUESTION]


async def test_scripted_error_repeats_for_its_times(standin: OpenAIStandIn) -> None:
    await script(standin, {"error": {"status": 429, "times": 2}})
    async with client_for(standin) as client:
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as raised:
                await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
            assert raised.value.code == "rate_limit_exceeded"
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert completion.choices[0].message.content == "You asked: What is the capital of France?"


async def test_wrong_api_key_is_an_authentication_error() -> None:
    async with OpenAIStandIn(api_key="sk-right") as standin:
        async with client_for(standin, api_key="sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        assert raised.value.status_code == 401
        assert raised.value.code == "invalid_api_key"
        async with client_for(standin, api_key="sk-right") as client:
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION
            )
            models = await client.models.list()
    assert completion.choices[0].message.content
    assert [m.id for m in models.data] == ["gpt-4o-mini", "fallback-model"]


async def test_unknown_model_is_not_found(standin: OpenAIStandIn) -> None:
    async with client_for(standin) as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-unknown", messages=QUESTION)
    assert raised.value.code == "model_not_found"
    assert raised.value.type == "invalid_request_error"


async def test_fail_models_fail_one_model_while_the_fallback_answers(
    standin: OpenAIStandIn,
) -> None:
    config = await control(
        standin, "POST", "/_control/config", {"failModels": {"gpt-4o-mini": 503}}
    )
    assert config["failModels"] == {"gpt-4o-mini": 503}
    async with client_for(standin) as client:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as raised:
                await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
            assert raised.value.status_code == 503
        completion = await client.chat.completions.create(model="fallback-model", messages=QUESTION)
    assert completion.model == "fallback-model"
    assert completion.choices[0].finish_reason == "stop"


async def test_replies_scripted_for_a_model_go_only_to_that_model(standin: OpenAIStandIn) -> None:
    await script(standin, {"content": "from the fallback"}, model="fallback-model")
    async with client_for(standin) as client:
        primary = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        fallback = await client.chat.completions.create(model="fallback-model", messages=QUESTION)
    assert primary.choices[0].message.content != "from the fallback"
    assert fallback.choices[0].message.content == "from the fallback"


async def test_max_tokens_cuts_the_completion_with_finish_reason_length(
    standin: OpenAIStandIn,
) -> None:
    await script(standin, {"content": "one two three four five"}, {"content": "a b c d"})
    async with client_for(standin) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, max_tokens=3
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, max_completion_tokens=2, stream=True
        )
        chunks = await collect(stream)
    assert completion.choices[0].message.content == "one two three "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b "
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_emissions_record_one_time_per_streamed_piece() -> None:
    async with OpenAIStandIn(token_delay_seconds=0.001) as standin:
        await script(standin, {"content": "alpha beta gamma"})
        async with client_for(standin) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION, stream=True
            )
            chunks = await collect(stream)
            await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        emissions = (await control(standin, "GET", "/_control/emissions"))["emissions"]
    (emission,) = emissions  # the non-streamed call records none
    assert emission["id"] == chunks[0].id
    assert emission["pieces"] == ["alpha ", "beta ", "gamma"]
    assert len(emission["times"]) == 3
    assert all(isinstance(t, float) for t in emission["times"])


async def test_malformed_bodies_get_openai_shaped_400s(standin: OpenAIStandIn) -> None:
    url = f"{standin.base_url}/chat/completions"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url, data=b"{not json", headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        async with http.post(url, json={"model": "gpt-4o-mini"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "messages"
        bad = {"model": "gpt-4o-mini", "messages": QUESTION, "max_tokens": 0}
        async with http.post(url, json=bad) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "max_tokens"


async def test_reset_clears_the_script_and_the_records(standin: OpenAIStandIn) -> None:
    await script(standin, {"content": "scripted"}, {"content": "scripted again"})
    await control(standin, "POST", "/_control/config", {"failModels": {"fallback-model": 500}})
    async with client_for(standin) as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        await control(standin, "POST", "/_control/reset")
        after = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        fallback = await client.chat.completions.create(model="fallback-model", messages=QUESTION)
    assert after.choices[0].message.content == "You asked: What is the capital of France?"
    assert fallback.choices[0].finish_reason == "stop"
    requests = (await control(standin, "GET", "/_control/requests"))["requests"]
    assert len(requests) == 2


async def test_bad_script_is_rejected(standin: OpenAIStandIn) -> None:
    async with aiohttp.ClientSession() as http:
        url = standin.base_url.removesuffix("/v1") + "/_control/script"
        async with http.post(url, json={"replies": [{"error": {"status": 200}}]}) as resp:
            assert resp.status == 400


async def test_a_hang_makes_the_client_time_out_and_stop_still_returns(
    standin: OpenAIStandIn,
) -> None:
    await script(standin, {"hang": 60, "content": "too late"}, {"content": "next"})
    async with client_for(standin) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION, timeout=0.2
            )
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert completion.choices[0].message.content == "next"
