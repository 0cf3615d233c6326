"""``sba-tool`` as a real subprocess against a stub of the API's internal tool gateway.

The stub is a test double of our own API, for the runtime's side of the contract only:
it checks the bearer token, serves one step, answers searches, stores artifacts and
records results. The real gateway is exercised end to end by the e2e suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sba_core.step_token import StepClaims, mint_step_token

# SBA_TOOL_BIN lets the same tests run against another install (e.g. the image's venv).
SBA_TOOL = os.environ.get("SBA_TOOL_BIN") or str(Path(sys.executable).with_name("sba-tool"))
RUN_ID = "6f1c2a9e-0000-4000-8000-000000000001"

STEP = "/internal/v1/step"
SEARCH = "/internal/v1/knowledge/search"
ARTIFACTS = "/internal/v1/artifacts"
RESULT = "/internal/v1/step/result"

HITS = [
    {
        "documentId": "doc-1",
        "chunkId": "doc-1-c0",
        "title": "Step tokens",
        "snippet": "A short-lived JWT <scoped> to one attempt.",
        "score": 0.87,
    },
    {
        "documentId": "doc-2",
        "chunkId": "doc-2-c3",
        "title": "Gateway",
        "snippet": "The API checks the bearer token.",
        "score": 0.42,
    },
]


def _token(step_id: str, tool: str) -> str:
    claims = StepClaims(
        run_id=RUN_ID,
        tenant="acme",
        namespace="tenant-acme",
        run_name="weekly",
        step_id=step_id,
        attempt=1,
        tool=tool,
    )
    return mint_step_token("test-secret-not-used-by-the-stub", claims, ttl_seconds=600)


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": {}, "request_id": "req-1"}}
    return web.json_response(body, status=status)


@dataclass
class StubGateway:
    token: str
    step: dict[str, Any]
    url: str = ""
    failures: dict[str, list[int]] = field(default_factory=dict)
    """Per path, statuses to answer with before behaving normally."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[tuple[bytes, str, str]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        @web.middleware
        async def check(request: web.Request, handler: Any) -> web.StreamResponse:
            self.calls.append((request.method, request.path))
            auth = request.headers.get("Authorization")
            self.auth_headers.append(auth)
            if auth != f"Bearer {self.token}":
                return _error(401, "unauthorized", "bad step token")
            pending = self.failures.get(request.path)
            if pending:
                status = pending.pop(0)
                return _error(status, f"stub_{status}", "injected by the test")
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[check])
        app.router.add_get(STEP, self._step)
        app.router.add_post(SEARCH, self._search)
        app.router.add_post(ARTIFACTS, self._artifact)
        app.router.add_post(RESULT, self._result)
        return app

    async def _step(self, request: web.Request) -> web.Response:
        return web.json_response(self.step)

    async def _search(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.searches.append(body)
        hits = HITS[: body.get("topK", 5)]
        return web.json_response({"query": body["query"], "hits": hits})

    async def _artifact(self, request: web.Request) -> web.Response:
        data = await request.read()
        title = request.headers["X-Artifact-Title"]
        content_type = request.headers["Content-Type"]
        self.artifacts.append((data, content_type, title))
        record = {
            "artifactId": f"art-{len(self.artifacts)}",
            "title": title,
            "contentType": content_type,
            "sizeBytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        return web.json_response(record, status=201)

    async def _result(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.results.append(body)
        return web.json_response({"callId": f"call-{len(self.results)}", "recorded": True})


async def _start(stub: StubGateway) -> web.AppRunner:
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    stub.url = f"http://{host}:{port}"
    return runner


def _step(
    tool: str, params: dict[str, Any], inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "runId": RUN_ID,
        "tenant": "acme",
        "stepId": "s1",
        "attempt": 1,
        "tool": tool,
        "params": params,
        "inputs": inputs or {},
    }


@pytest.fixture
async def make_gateway() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def make(step: dict[str, Any], **kwargs: Any) -> StubGateway:
        stub = StubGateway(token=_token(step["stepId"], step["tool"]), step=step, **kwargs)
        runners.append(await _start(stub))
        return stub

    yield make
    for runner in runners:
        await runner.cleanup()


@dataclass
class ToolRun:
    code: int
    stdout: str
    stderr: str
    termination: dict[str, Any] | None
    termination_raw: bytes
    logs: list[dict[str, Any]]


async def _run_tool(
    tmp_path: Path, gateway_url: str, token: str, *, step_id: str = "s1", **extra_env: str
) -> ToolRun:
    termination = tmp_path / "termination-log"
    workdir = tmp_path / "cwd"
    workdir.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TMPDIR": str(tmp_path),
        # Any proxy from the environment must be ignored: the gateway is always direct.
        "http_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "SBA_GATEWAY_URL": gateway_url,
        "SBA_STEP_TOKEN": token,
        "SBA_RUN_ID": RUN_ID,
        "SBA_STEP_ID": step_id,
        "SBA_TERMINATION_LOG": str(termination),
        "SBA_GATEWAY_TIMEOUT_SECONDS": "10",
        **extra_env,
    }
    env = {k: v for k, v in env.items() if v != ""}
    proc = await asyncio.create_subprocess_exec(
        SBA_TOOL,
        env=env,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    raw = termination.read_bytes() if termination.exists() else b""
    stderr = err.decode()
    logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    # The runtime writes nothing but its termination message.
    assert list(workdir.iterdir()) == []
    # The token is a credential: it must never reach a log.
    if token:
        assert token not in stderr
        assert token not in out.decode()
        assert token.split(".")[2] not in stderr
    return ToolRun(
        code=proc.returncode,
        stdout=out.decode(),
        stderr=stderr,
        termination=json.loads(raw) if raw else None,
        termination_raw=raw,
        logs=logs,
    )


async def test_knowledge_search_success(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "step tokens", "topK": 2}))
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 0, run.stderr
    assert gw.calls == [("GET", STEP), ("POST", SEARCH), ("POST", RESULT)]
    assert gw.auth_headers == [f"Bearer {gw.token}"] * 3
    assert gw.searches == [{"query": "step tokens", "topK": 2}]
    assert gw.results == [
        {"success": True, "result": {"query": "step tokens", "hits": HITS}, "error": None}
    ]
    assert run.termination is not None
    assert run.termination["ok"] is True
    assert run.termination["callId"] == "call-1"
    assert "2 hit(s)" in run.termination["summary"]
    assert len(run.termination_raw) <= 1024
    events = [log["event"] for log in run.logs]
    assert "step.succeeded" in events
    assert all(log["runId"] == RUN_ID for log in run.logs)


async def test_render_document_success(tmp_path: Path, make_gateway: Any) -> None:
    inputs = {
        "search": {"query": "step tokens", "hits": HITS},
        "other": {"query": "unused", "hits": []},
    }
    params = {"title": "Résumé <weekly>", "format": "html", "sources": ["search"]}
    gw = await make_gateway(_step("render.document", params, inputs))
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 0, run.stderr
    assert gw.calls == [("GET", STEP), ("POST", ARTIFACTS), ("POST", RESULT)]
    [(data, content_type, title)] = gw.artifacts
    assert content_type == "text/html; charset=utf-8"
    assert title == "Résumé <weekly>"
    html = data.decode("utf-8")
    assert "<h1>Résumé &lt;weekly&gt;</h1>" in html
    assert "<h2>step tokens</h2>" in html
    assert "A short-lived JWT &lt;scoped&gt; to one attempt." in html
    assert "unused" not in html
    [posted] = gw.results
    assert posted["success"] is True
    assert posted["result"] == {
        "artifactId": "art-1",
        "title": "Résumé <weekly>",
        "contentType": "text/html; charset=utf-8",
        "sizeBytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert run.termination is not None
    assert run.termination["ok"] is True
    assert "art-1" in run.termination["summary"]


async def test_bad_params_exit_2(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"topK": 0}))
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 2, run.stderr
    assert gw.calls == [("GET", STEP), ("POST", RESULT)]  # the tool never ran
    [posted] = gw.results
    assert posted["success"] is False
    assert posted["result"] is None
    assert "knowledge.search params invalid" in posted["error"]
    assert "query" in posted["error"]
    assert run.termination is not None
    assert run.termination["ok"] is False
    assert run.termination["retryable"] is False
    assert "params invalid" in run.termination["error"]


async def test_unknown_source_exit_2(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("render.document", {"title": "T", "sources": ["nope"]}))
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 2, run.stderr
    assert gw.artifacts == []
    assert [r["success"] for r in gw.results] == [False]
    assert run.termination is not None
    assert "nope" in run.termination["error"]


async def test_unknown_tool_exit_2(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("shell.exec", {"cmd": "true"}))
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 2, run.stderr
    [posted] = gw.results
    assert posted == {"success": False, "result": None, "error": "unknown tool 'shell.exec'"}
    assert run.termination is not None
    assert run.termination["ok"] is False


async def test_gateway_500_exit_1(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "q"}), failures={STEP: [500]})
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 1, run.stderr
    assert gw.calls == [("GET", STEP)]
    assert gw.results == []  # a transient failure is not recorded as the step's outcome
    assert run.termination is not None
    assert run.termination["ok"] is False
    assert run.termination["retryable"] is True
    assert "HTTP 500" in run.termination["error"]


async def test_rate_limited_search_exit_1(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "q"}), failures={SEARCH: [429]})
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 1, run.stderr
    assert gw.results == []
    assert run.termination is not None
    assert run.termination["retryable"] is True


async def test_result_refused_by_gateway_exit_2(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "q"}), failures={RESULT: [422]})
    run = await _run_tool(tmp_path, gw.url, gw.token)

    assert run.code == 2, run.stderr
    assert gw.calls[-2:] == [("POST", RESULT), ("POST", RESULT)]
    # The refused success was not stored (422); the refusal is then recorded as the failure.
    [failure] = gw.results
    assert failure["success"] is False
    assert "HTTP 422" in failure["error"]
    assert run.termination is not None
    assert run.termination["ok"] is False


async def test_wrong_token_exit_2(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "q"}))
    other = _token("s1", "render.document")
    run = await _run_tool(tmp_path, gw.url, other)

    assert run.code == 2, run.stderr
    assert run.termination is not None
    assert "HTTP 401" in run.termination["error"]
    assert run.termination["retryable"] is False


async def test_step_mismatch_exit_2(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "q"}))
    run = await _run_tool(tmp_path, gw.url, gw.token, step_id="s2")

    assert run.code == 2, run.stderr
    assert gw.results == []
    assert run.termination is not None
    assert "different step" in run.termination["error"]


async def test_unreachable_gateway_exit_1(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = _token("s1", "knowledge.search")
    run = await _run_tool(tmp_path, f"http://127.0.0.1:{port}", token)

    assert run.code == 1, run.stderr
    assert run.termination is not None
    assert run.termination["ok"] is False
    assert run.termination["retryable"] is True
    assert "unreachable" in run.termination["error"]
    retries = [log for log in run.logs if log["event"] == "gateway.unreachable"]
    assert [log["attempt"] for log in retries] == [1, 2, 3]


async def test_missing_environment_exit_2(tmp_path: Path) -> None:
    run = await _run_tool(tmp_path, "", "")

    assert run.code == 2, run.stderr
    assert run.termination is not None
    assert run.termination["ok"] is False
    assert "SBA_GATEWAY_URL" in run.termination["error"]
    assert "SBA_STEP_TOKEN" in run.termination["error"]


async def test_unwritable_termination_log_is_ignored(tmp_path: Path, make_gateway: Any) -> None:
    gw = await make_gateway(_step("knowledge.search", {"query": "q"}))
    missing_dir = tmp_path / "no-such-dir" / "termination-log"
    run = await _run_tool(tmp_path, gw.url, gw.token, SBA_TERMINATION_LOG=str(missing_dir))

    assert run.code == 0, run.stderr
    assert [r["success"] for r in gw.results] == [True]


def test_termination_message_is_capped_at_1_kib(tmp_path: Path) -> None:
    from sba_tools.runtime import write_termination_message

    path = tmp_path / "termination-log"
    write_termination_message(
        str(path), {"ok": False, "error": 'é"\\' * 5000, "retryable": True, "tool": "t"}
    )
    raw = path.read_bytes()
    assert len(raw) <= 1024
    message = json.loads(raw)
    assert message["ok"] is False
    assert message["retryable"] is True
    assert message["error"].startswith('é"\\')
    assert message["error"].endswith("…")
    # An unwritable path is ignored, not raised.
    write_termination_message(str(tmp_path / "missing" / "log"), {"ok": True})
