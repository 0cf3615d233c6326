"""An OpenAI-compatible chat-completions server: the LLM provider for tests and the devstack.

A real provider cannot run here, so this double speaks the documented wire protocol
(``POST /v1/chat/completions`` with and without ``stream``, ``GET /v1/models``, errors
as ``{"error": {"message", "type", "param", "code"}}``) and the official SDK can drive
it unmodified. What the "model" answers is scripted by the test through ``/_control/``
endpoints, which are not part of the OpenAI API:

- ``POST /_control/script {"replies": [...], "model"?}`` queues replies (FIFO), each
  ``{"content"}``, ``{"tool_calls": [{"name", "arguments", "id"?}]}`` (both may be given),
  ``{"error": {"status", "times"?, "message"?}}`` or ``{"hang": seconds}`` (combinable
  with content); with ``model`` the replies are only for calls to that model. With no
  reply queued the answer is ``"You asked: <last user message>"``.
- ``POST /_control/config {"tokenDelaySeconds", "models", "failModels": {model: status}}``
  (``GET`` reads it): a pause before every streamed piece, the served model names, and
  models that answer every call with an HTTP error.
- ``GET /_control/requests`` (bodies in arrival order), ``GET /_control/emissions``
  (per streamed response, the ``time.time()`` at which each content piece was written),
  ``POST /_control/reset`` (back to the constructor's state).

Token counts are deterministic: words and punctuation of the message contents for the
prompt, pieces emitted for the completion; ``max_tokens``/``max_completion_tokens`` cuts
the completion at that many pieces (``finish_reason: "length"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from sba_devstack.standin_serve import LoopbackServer, serve_until_signal

DEFAULT_MODELS: Final = ("gpt-4o-mini", "fallback-model")
_PIECE: Final = re.compile(r"^\s+|\S+\s*")
_TOKEN: Final = re.compile(r"\w+|[^\w\s]")
_ARGUMENT_FRAGMENTS: Final = 3
_MODEL_CREATED: Final = 1_700_000_000
# type and code as OpenAI sends them for each status a test can provoke.
_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass
class _Reply:
    content: str | None = None
    tool_calls: list[tuple[str, str, str]] | None = None  # (id, name, arguments JSON)
    error_status: int | None = None
    error_message: str | None = None
    times: int = 1
    hang: float = 0.0


@dataclass
class _ToolCall:
    id: str
    name: str
    fragments: list[str]


@dataclass
class _Plan:
    """One completion, already cut to the token limit."""

    head: dict[str, Any]  # id, created, model: the same in every chunk
    content: str | None
    pieces: list[str]
    tool_calls: list[_ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces) + sum(len(call.fragments) for call in self.tool_calls)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}}
                for c in self.tool_calls
                for args in ["".join(c.fragments)]
            ]
        return message

    def deltas(self) -> Iterator[tuple[dict[str, Any], str | None, str | None]]:
        """(delta, the piece it carries or None, finish_reason) for each chunk, in order."""
        yield {"role": "assistant", "content": ""}, None, None
        for piece in self.pieces:
            yield {"content": piece}, piece, None
        for index, call in enumerate(self.tool_calls):
            # The documented shape: id, type and name once, then argument fragments.
            function = {"name": call.name, "arguments": ""}
            yield _call_delta(index, id=call.id, type="function", function=function), None, None
            for fragment in call.fragments:
                yield _call_delta(index, function={"arguments": fragment}), fragment, None
        yield {}, None, self.finish_reason


def _call_delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


def _error(
    status: int, message: str | None = None, *, param: str | None = None, code: str | None = None
) -> web.Response:
    kind, default_code, default_message = _ERRORS.get(status, ("api_error", None, "Error."))
    error = {"message": message or default_message, "type": kind, "param": param}
    return web.json_response({"error": {**error, "code": code or default_code}}, status=status)


def _request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def _text(content: Any) -> str:
    """The text of a message's content: a string, or a list of content parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict)).strip()
    return content if isinstance(content, str) else ""


def _is_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def _problem(body: Any) -> tuple[str, str | None, str | None] | None:
    """Why OpenAI would reject this body with a 400, as (message, param, code), if it would."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None, None
    for name in ("model", "messages"):
        if name not in body:
            return f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
    messages, stream = body["messages"], body.get("stream")
    roles = isinstance(messages, list) and messages != []
    roles = roles and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    checks = [
        ("model", isinstance(body["model"], str) and body["model"] != "", "a non-empty string"),
        ("messages", roles, "a non-empty array of messages, each with a role"),
        ("stream", stream is None or isinstance(stream, bool), "a boolean"),
        ("stream_options", body.get("stream_options") is None or stream is True, "stream: true"),
        ("max_tokens", _is_count(body.get("max_tokens")), "an integer >= 1"),
        ("max_completion_tokens", _is_count(body.get("max_completion_tokens")), "an integer >= 1"),
        ("n", body.get("n") in (None, 1), "1 (this stand-in generates one choice)"),
    ]
    for param, ok, expected in checks:
        if not ok:
            return f"Invalid value for '{param}': expected {expected}.", param, "invalid_value"
    return None


def _reply(raw: Any) -> _Reply:
    """A scripted reply from its control-endpoint JSON (ValueError etc. when malformed)."""
    if not isinstance(raw, dict) or not raw.keys() & {"content", "tool_calls", "error", "hang"}:
        raise ValueError(f"a reply needs content, tool_calls, error or hang: {raw!r}")
    content, error = raw.get("content"), raw.get("error", {})
    if content is not None and not isinstance(content, str):
        raise ValueError("content must be a string")
    status = error.get("status")
    if "error" in raw and not (isinstance(status, int) and 400 <= status <= 599):
        raise ValueError("error.status must be an HTTP error status")
    calls = None
    if "tool_calls" in raw:
        # String arguments go out verbatim, so a test can script arguments that are not JSON.
        calls = [
            (
                str(call.get("id") or f"call_{secrets.token_hex(12)}"),
                str(call["name"]),
                args if isinstance(args := call.get("arguments", {}), str) else json.dumps(args),
            )
            for call in raw["tool_calls"]
        ]
    times, hang = int(error.get("times", 1)), float(raw.get("hang", 0.0))
    return _Reply(content, calls, status, error.get("message"), times, hang)


def _fragments(text: str) -> list[str]:
    size = max(1, -(-len(text) // _ARGUMENT_FRAGMENTS))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _plan(reply: _Reply | None, body: dict[str, Any]) -> _Plan:
    """What the "model" says to this request: the scripted reply, else the echo."""
    if reply is None or (reply.content is None and reply.tool_calls is None):
        users = [m for m in body["messages"] if m.get("role") == "user"]
        content: str | None = f"You asked: {_text(users[-1].get('content')) if users else ''}"
        calls: list[tuple[str, str, str]] = []
    else:
        content, calls = reply.content, reply.tool_calls or []
    head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time())}
    head.update(model=body["model"], system_fingerprint=None)
    plan = _Plan(head, content, _PIECE.findall(content or ""))
    plan.tool_calls = [_ToolCall(cid, name, _fragments(args)) for cid, name, args in calls]
    plan.finish_reason = "tool_calls" if plan.tool_calls else "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and plan.completion_tokens > limit:
        plan.pieces = plan.pieces[:limit]
        plan.content = "".join(plan.pieces) if content is not None else None
        budget, kept = limit - len(plan.pieces), list[_ToolCall]()
        for call in plan.tool_calls:
            if budget > 0:  # a call whose arguments would all be cut is not sent at all
                kept.append(_ToolCall(call.id, call.name, call.fragments[:budget]))
                budget -= len(kept[-1].fragments)
        plan.tool_calls, plan.finish_reason = kept, "length"
    return plan


class OpenAIStandIn(LoopbackServer):
    """An in-process OpenAI chat-completions server on a loopback port."""

    name = "OpenAI stand-in"
    # A client that gives up stops its stream instead of the server writing the rest
    # into a closed socket.
    cancel_handlers = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        api_key: str | None = None,
        token_delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        self._initial_models, self._initial_delay = tuple(models), token_delay_seconds
        self._api_key = api_key
        self._reset()

    def _reset(self) -> None:
        self._models: list[str] = list(self._initial_models)
        self._token_delay = self._initial_delay
        self._fail_models: dict[str, int] = {}
        self._queues: dict[str | None, deque[_Reply]] = {}
        self._requests: list[dict[str, Any]] = []
        self._emissions: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_post("/_control/script", self._control_script)
        app.router.add_get("/_control/config", self._control_config)
        app.router.add_post("/_control/config", self._control_config)
        app.router.add_get("/_control/requests", self._control_records)
        app.router.add_get("/_control/emissions", self._control_records)
        app.router.add_post("/_control/reset", self._control_reset)

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    def _denied(self, request: web.Request) -> web.Response | None:
        if self._api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "You didn't provide an API key.")
        if not secrets.compare_digest(header[len("Bearer ") :].encode(), self._api_key.encode()):
            return _error(401)
        return None

    def _next_reply(self, model: str) -> _Reply | None:
        for key in (model, None):
            queue = self._queues.get(key)
            if queue:
                reply = queue[0]
                if reply.error_status is not None and reply.times > 1:
                    reply.times -= 1  # stays queued for its remaining failures
                else:
                    queue.popleft()
                return reply
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self._requests.append({"path": request.path, "body": body, "receivedAt": time.time()})
        if (denied := self._denied(request)) is not None:
            return denied
        if (problem := _problem(body)) is not None:
            message, param, code = problem
            return _error(400, message, param=param, code=code)
        model: str = body["model"]
        if model in self._fail_models:
            return _error(self._fail_models[model])
        if model not in self._models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return _error(404, message, code="model_not_found")
        reply = self._next_reply(model)
        if reply is not None:
            await self._pause(reply.hang)
            if reply.error_status is not None:
                return _error(reply.error_status, reply.error_message)
        plan = _plan(reply, body)
        prompt = sum(len(_TOKEN.findall(_text(m.get("content")))) for m in body["messages"])
        done = plan.completion_tokens
        usage = dict(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)
        if body.get("stream"):
            return await self._stream(request, body, plan, usage)
        choice = {"index": 0, "message": plan.message(), "finish_reason": plan.finish_reason}
        completion = {**plan.head, "object": "chat.completion", "usage": usage}
        return web.json_response(
            {**completion, "choices": [{**choice, "logprobs": None}]},
            headers={"x-request-id": _request_id()},
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: _Plan, usage: dict[str, int]
    ) -> web.StreamResponse:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        response = web.StreamResponse(headers={**headers, "x-request-id": _request_id()})
        await response.prepare(request)
        head = plan.head
        emission: dict[str, Any] = {"id": head["id"], "model": head["model"]}
        emission.update(pieces=[], times=[])
        self._emissions.append(emission)

        async def send(choices: list[dict[str, Any]], final_usage: Any = None) -> None:
            chunk = {**head, "object": "chat.completion.chunk", "choices": choices}
            if include_usage:
                chunk["usage"] = final_usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        try:
            for delta, piece, finish in plan.deltas():
                if piece is not None:
                    await self._pause(self._token_delay)
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                await send([choice])
                if piece is not None and "content" in delta:
                    emission["pieces"].append(piece)
                    emission["times"].append(time.time())
            if include_usage:
                await send([], usage)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left mid-stream; what it saw is already in the emissions
        return response

    async def _list_models(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        model = {"object": "model", "created": _MODEL_CREATED, "owned_by": "sba-devstack"}
        data = [{"id": m, **model} for m in self._models]
        return web.json_response({"object": "list", "data": data})

    async def _control_script(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            replies = [_reply(r) for r in body["replies"]]
            model = body.get("model")
            if model is not None and not isinstance(model, str):
                raise ValueError("model must be a string")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return web.json_response({"error": {"message": str(exc)}}, status=400)
        self._queues.setdefault(model, deque()).extend(replies)
        return web.json_response({"queued": sum(len(q) for q in self._queues.values())})

    async def _control_config(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                body = await request.json()
                delay = float(body.get("tokenDelaySeconds", self._token_delay))
                models = [str(m) for m in body.get("models", self._models)]
                fail = {
                    str(m): int(s) for m, s in body.get("failModels", self._fail_models).items()
                }
                if delay < 0 or any(not 400 <= s <= 599 for s in fail.values()):
                    raise ValueError("tokenDelaySeconds >= 0 and failModels statuses 4xx/5xx")
            except (ValueError, TypeError, AttributeError) as exc:
                return web.json_response({"error": {"message": str(exc)}}, status=400)
            self._token_delay, self._models, self._fail_models = delay, models, fail
        config = {"tokenDelaySeconds": self._token_delay, "models": self._models}
        return web.json_response({**config, "failModels": self._fail_models})

    async def _control_records(self, request: web.Request) -> web.Response:
        if request.path.endswith("/requests"):
            return web.json_response({"requests": self._requests})
        return web.json_response({"emissions": self._emissions})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self._reset()
        return web.json_response({"reset": True})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sba_devstack.openai_standin",
        description="An OpenAI-compatible chat-completions stand-in (dev and tests only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default=None, help="require this Bearer token")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds per piece")
    parser.add_argument("--model", action="append", dest="models", help="repeatable")
    args = parser.parse_args(argv)
    standin = OpenAIStandIn(
        args.host,
        args.port,
        models=tuple(args.models or DEFAULT_MODELS),
        api_key=args.api_key,
        token_delay_seconds=args.token_delay,
    )
    banner = lambda: f"OpenAI stand-in listening on {standin.base_url}"  # noqa: E731
    asyncio.run(serve_until_signal(standin, banner))


if __name__ == "__main__":
    main()
