"""The API's Kubernetes transport (`sba_api.kube_http`) and the `KubeClient` facade on it,
against a local aiohttp server that answers like a kube-apiserver (Status objects)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client

from sba_api.errors import ServiceUnavailable, UpstreamError
from sba_api.kube import KubeClient, PatchConflict, SpecRejected, TenantNotFound
from sba_api.kube_http import (
    MERGE_PATCH,
    KubeHttp,
    KubeStatusError,
    KubeUnreachable,
    custom_path,
    ssl_context,
)
from sba_core.group import AGENTRUN_PLURAL, API_VERSION, GROUP, TENANT_PLURAL, VERSION
from sba_devstack import certs

RUNS = f"/apis/{GROUP}/{VERSION}/namespaces/team-a/{AGENTRUN_PLURAL}"
Answer = tuple[int, dict[str, Any]] | Callable[[web.Request], Awaitable[web.StreamResponse]]


def status(code: int, reason: str, message: str, **details: str) -> tuple[int, dict[str, Any]]:
    """An error answer as the kube-apiserver writes it."""
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApiServer:
    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.headers),
                json.loads(raw) if raw else None,
            )
        )
        answer = self.answers.get((request.method, request.path))
        if answer is None:
            code, body = status(404, "NotFound", f"the server could not find {request.path}")
            return web.json_response(body, status=code)
        if callable(answer):
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return await answer(request)
            finally:
                self.in_flight -= 1
        code, body = answer
        return web.json_response(body, status=code)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, TestServer]]:
    api = FakeApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    server = TestServer(app)
    await server.start_server()
    yield api, server
    await server.close()


def configuration(server: TestServer, token: str = "s3cret") -> Any:
    conf = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    conf.api_key = {"authorization": token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    return conf


@pytest.fixture
async def kube(fake: tuple[FakeApiServer, TestServer]) -> AsyncIterator[KubeClient]:
    kube = KubeClient(client.ApiClient(configuration(fake[1])), request_timeout_seconds=0.5)
    yield kube
    await kube.aclose()


def _run(name: str = "r1") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "7"},
        "spec": {"tenant": "team-a", "prompt": "hi"},
    }


async def test_reads_send_the_bearer_token_and_return_the_plain_object(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    api.answers[("GET", f"{RUNS}/r1")] = (200, _run())
    assert await kube.get_agent_run("team-a", "r1") == _run()
    (seen,) = api.seen
    assert seen.headers["Authorization"] == "Bearer s3cret"
    assert seen.headers["Accept"] == "application/json"
    assert "Content-Type" not in seen.headers  # no body, no content type


async def test_the_token_refresh_hook_runs_before_each_request(
    fake: tuple[FakeApiServer, TestServer],
) -> None:
    api, server = fake
    conf = configuration(server, token="old")
    tokens = iter(["one", "two"])

    def refresh(c: Any) -> None:
        c.api_key["authorization"] = next(tokens)

    conf.refresh_api_key_hook = refresh
    api.answers[("GET", "/version")] = (200, {"gitVersion": "v1.31.0"})
    http = KubeHttp(conf)
    try:
        await http.request("GET", "/version")
        await http.request("GET", "/version")
    finally:
        await http.close()
    assert [s.headers["Authorization"] for s in api.seen] == ["Bearer one", "Bearer two"]


async def test_a_patch_is_a_json_merge_patch(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    patched = {**_run(), "spec": {**_run()["spec"], "cancel": True}}
    api.answers[("PATCH", f"{RUNS}/r1")] = (200, patched)
    patch = {"metadata": {"resourceVersion": "7"}, "spec": {"cancel": True}}
    assert await kube.patch_agent_run("team-a", "r1", patch) == patched
    (seen,) = api.seen
    assert seen.headers["Content-Type"] == MERGE_PATCH
    assert seen.body == patch


async def test_a_create_posts_json(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    api.answers[("POST", RUNS)] = (201, _run())
    assert await kube.create_agent_run("team-a", _run()) == _run()
    (seen,) = api.seen
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == _run()


async def test_the_transport_raises_the_status_object(
    fake: tuple[FakeApiServer, TestServer],
) -> None:
    api, server = fake
    api.answers[("GET", f"{RUNS}/r1")] = status(
        409, "Conflict", "the object has been modified", kind="agentruns"
    )
    http = KubeHttp(configuration(server))
    try:
        with pytest.raises(KubeStatusError) as raised:
            await http.request("GET", f"{RUNS}/r1")
    finally:
        await http.close()
    assert raised.value.status == 409
    assert raised.value.message == "the object has been modified"
    assert raised.value.details == {"kind": "agentruns"}


async def test_404_is_none_for_reads_and_false_for_deletes(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    assert await kube.get_agent_run("team-a", "gone") is None
    assert await kube.get_approval("team-a", "gone") is None
    assert await kube.get_tenant("gone") is None
    assert await kube.get_secret_value("team-a", "gone", "apiKey") is None
    assert await kube.patch_agent_run("team-a", "gone", {"spec": {}}) is None
    await kube.delete_agent_run("team-a", "gone")
    assert await kube.delete_tenant("gone") is False
    assert await kube.list_user_tools("team-a") == ([], [])


async def test_409_and_422_on_a_patch_are_a_conflict(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    for code, reason in ((409, "Conflict"), (422, "Invalid")):
        api.answers[("PATCH", f"{RUNS}/r1")] = status(code, reason, f"refused {code}")
        with pytest.raises(PatchConflict) as raised:
            await kube.patch_agent_run("team-a", "r1", {"spec": {"cancel": True}})
        assert (raised.value.status, raised.value.message) == (code, f"refused {code}")


async def test_422_on_create_is_a_rejected_spec(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    api.answers[("POST", RUNS)] = status(422, "Invalid", "spec.prompt: Required value")
    with pytest.raises(SpecRejected) as raised:
        await kube.create_agent_run("team-a", _run())
    assert raised.value.status == 400
    assert "spec.prompt: Required value" in raised.value.message


async def test_404_on_create_tells_a_missing_namespace_from_a_missing_crd(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    api.answers[("POST", RUNS)] = status(404, "NotFound", 'namespaces "team-a" not found')
    with pytest.raises(TenantNotFound):  # the namespace read 404s too
        await kube.create_agent_run("team-a", _run())
    api.answers[("GET", "/api/v1/namespaces/team-a")] = (200, {"kind": "Namespace"})
    with pytest.raises(UpstreamError, match="not installed"):
        await kube.create_agent_run("team-a", _run())


async def test_409_on_create_approval_returns_the_existing_one(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    approvals = custom_path(GROUP, VERSION, "approvals", namespace="team-a")
    existing = {"metadata": {"name": "a1"}, "spec": {"decision": "approve"}}
    api.answers[("POST", approvals)] = status(409, "AlreadyExists", "exists")
    api.answers[("GET", f"{approvals}/a1")] = (200, existing)
    assert await kube.create_approval("team-a", {"metadata": {"name": "a1"}}) == (
        existing,
        False,
    )
    tenants = custom_path(GROUP, VERSION, TENANT_PLURAL)
    api.answers[("POST", tenants)] = status(409, "AlreadyExists", "exists")
    assert await kube.create_tenant({"metadata": {"name": "t"}}) is None


async def test_403_is_an_upstream_error_and_500_unavailable(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    api.answers[("GET", f"{RUNS}/r1")] = status(403, "Forbidden", "no RBAC")
    with pytest.raises(UpstreamError, match="refused to read the AgentRun: no RBAC"):
        await kube.get_agent_run("team-a", "r1")
    api.answers[("GET", f"{RUNS}/r1")] = status(500, "InternalError", "etcd down")
    with pytest.raises(ServiceUnavailable, match="etcd down") as raised:
        await kube.get_agent_run("team-a", "r1")
    assert raised.value.status == 503


async def test_a_secret_value_is_decoded(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, _ = fake
    secret = {"kind": "Secret", "data": {"apiKey": "c2stMTIzCg=="}}
    api.answers[("GET", "/api/v1/namespaces/team-a/secrets/model")] = (200, secret)
    assert await kube.get_secret_value("team-a", "model", "apiKey") == "sk-123"
    assert await kube.get_secret_value("team-a", "model", "other") is None


async def test_a_slow_api_server_is_a_timeout_not_a_hang(
    fake: tuple[FakeApiServer, TestServer], kube: KubeClient
) -> None:
    api, server = fake

    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response(_run())

    api.answers[("GET", f"{RUNS}/slow")] = stall
    http = KubeHttp(configuration(server), timeout_seconds=0.2)
    try:
        with pytest.raises(KubeUnreachable) as raised:
            await http.request("GET", f"{RUNS}/slow")
        assert raised.value.timed_out
    finally:
        await http.close()

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceUnavailable, match="did not answer in time") as unavailable:
        await kube.get_agent_run("team-a", "slow")  # a 0.5 s budget
    assert loop.time() - started < 2
    assert unavailable.value.status == 503


async def test_the_connection_pool_is_bounded(
    fake: tuple[FakeApiServer, TestServer],
) -> None:
    api, server = fake

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.1)
        return web.json_response({"ok": True})

    api.answers[("GET", "/version")] = slow
    http = KubeHttp(configuration(server), max_connections=2)
    try:
        answers = await asyncio.gather(*(http.request("GET", "/version") for _ in range(6)))
    finally:
        await http.close()
    assert answers == [{"ok": True}] * 6
    assert api.most_in_flight == 2


async def test_an_unreachable_server_is_unavailable() -> None:
    conf = client.Configuration(host="http://127.0.0.1:9")  # discard: nothing listens
    kube = KubeClient(client.ApiClient(conf), request_timeout_seconds=2)
    try:
        with pytest.raises(ServiceUnavailable, match="unreachable while trying to reach"):
            await kube.ping()
    finally:
        await kube.aclose()


async def test_tls_with_a_cluster_ca_and_a_client_certificate(tmp_path: Path) -> None:
    ca = certs.create_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    certs.issue_serving_cert(ca).write(tmp_path / "server.crt", tmp_path / "server.key")
    certs.issue_client_cert(ca, "sba-api").write(tmp_path / "client.crt", tmp_path / "client.key")
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.crt")
    serving.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    serving.verify_mode = ssl.CERT_REQUIRED  # like the kube-apiserver's --client-ca-file

    users: list[str] = []

    async def version(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        users.extend(v for rdn in (peer or {}).get("subject", ()) for k, v in rdn)
        return web.json_response({"gitVersion": "v1.31.0"})

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=serving)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        conf = client.Configuration(host=f"https://localhost:{port}")
        conf.ssl_ca_cert = str(tmp_path / "ca.crt")
        conf.cert_file = str(tmp_path / "client.crt")
        conf.key_file = str(tmp_path / "client.key")
        kube = KubeClient(client.ApiClient(conf))
        try:
            await kube.ping()
        finally:
            await kube.aclose()
        assert users == ["sba-api"]

        untrusting = client.Configuration(host=f"https://localhost:{port}")
        kube = KubeClient(client.ApiClient(untrusting))  # the system CAs only
        try:
            with pytest.raises(ServiceUnavailable, match="unreachable"):
                await kube.ping()
        finally:
            await kube.aclose()
    finally:
        await runner.cleanup()


def test_verify_ssl_off_skips_verification() -> None:
    conf = client.Configuration(host="https://kube.example:6443")
    conf.verify_ssl = False
    ctx = ssl_context(conf)
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname


async def test_close_without_awaiting_still_closes_the_session(
    fake: tuple[FakeApiServer, TestServer],
) -> None:
    api, server = fake
    api.answers[("GET", "/version")] = (200, {"gitVersion": "v1.31.0"})
    kube = KubeClient(client.ApiClient(configuration(server)))
    await kube.ping()
    session = kube._http._session
    assert session is not None
    assert not session.closed
    kube.close()
    await asyncio.sleep(0.05)
    assert session.closed
