"""Security of the public API, against real `sba-agentic api` processes.

Two API replicas share one Redis, Postgres (as sba_app) and the control plane;
tokens are minted here: HS256 with the shared secret, RS256 from a local JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sba_core.auth.dev_tokens import mint_dev_token
from sba_devstack.services import Service
from tests.integration.api_processes import JwksServer, start_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WINDOW_SECONDS = 10
TENANT_LIMIT = 30
PRINCIPAL_LIMIT = 20
STREAM_CAP = 2
MAX_BODY = 64 * 1024


@dataclass
class Secured:
    urls: list[str]
    secret: str
    jwks: JwksServer
    rsa_key: rsa.RSAPrivateKey
    tenant_a: str
    tenant_b: str
    apis: list[Service]

    @property
    def url(self) -> str:
        return self.urls[0]

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "sba-agentic",
            "aud": "sba-agentic-api",
            "sub": "alice",
            "tenant": self.tenant_a,
            "roles": ["member"],
            "iat": now,
            "exp": now + 300,
        }
        claims.update(over)
        return claims

    def hs(self, **over: Any) -> str:
        return jwt.encode(self.claims(**over), self.secret, algorithm="HS256")

    def auth(
        self, tenant: str, user: str = "alice", roles: tuple[str, ...] = ("member",)
    ) -> dict[str, str]:
        token = mint_dev_token(self.secret, tenant=tenant, user=user, roles=roles)
        return {"Authorization": f"Bearer {token}"}


def _namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"tenant-{name}")))


@pytest.fixture(scope="module")
def secured(
    crds_installed: None,
    kube_api: client.ApiClient,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Secured]:
    core = client.CoreV1Api(kube_api)
    suffix = uuid.uuid4().hex[:5]
    tenant_a, tenant_b = f"sec-a-{suffix}", f"sec-b-{suffix}"
    for name in (tenant_a, tenant_b):
        _namespace(core, name)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = JwksServer()
    jwks.keys = [{**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}]
    secret = secrets.token_urlsafe(48)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "DATABASE_URL": app_dsn,
        "REDIS_URL": redis_url,
        "SBA_STEP_TOKEN_SECRET": secrets.token_urlsafe(48),
        "SBA_JWT_HS256_SECRET": secret,
        "SBA_JWT_JWKS_URL": jwks.url,
        "SBA_JWT_JWKS_MIN_REFRESH_SECONDS": "0.5",
        "SBA_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SBA_RATE_LIMIT_TENANT_REQUESTS": str(TENANT_LIMIT),
        "SBA_RATE_LIMIT_PRINCIPAL_REQUESTS": str(PRINCIPAL_LIMIT),
        "SBA_SSE_MAX_STREAMS_PER_TENANT": str(STREAM_CAP),
        "SBA_SSE_HEARTBEAT_SECONDS": "1",
        "SBA_API_MAX_BODY_BYTES": str(MAX_BODY),
    }
    logs = tmp_path_factory.mktemp("security-logs")
    apis: list[Service] = []
    with jwks.running():
        try:
            urls = []
            for i in range(2):
                service, url = start_api(env, logs, f"api-{i}")
                apis.append(service)
                urls.append(url)
            yield Secured(urls, secret, jwks, key, tenant_a, tenant_b, apis)
        finally:
            for service in apis:
                service.stop()
            for name in (tenant_a, tenant_b):
                try:
                    core.delete_namespace(f"tenant-{name}")
                except ApiException as err:
                    if err.status != 404:
                        raise
            print(f"security logs: {logs}")


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json(content_type=None)
    return body


def _error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == code, body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _create_run(
    http: aiohttp.ClientSession, s: Secured, headers: dict[str, str]
) -> dict[str, Any]:
    async with http.post(
        f"{s.url}/api/v1/runs", json={"prompt": "What is SBA?"}, headers=headers
    ) as resp:
        body = await _json(resp)
        assert resp.status == 201, body
        return body


# -- authentication -------------------------------------------------------------------


async def test_bad_tokens_are_401_and_say_nothing(
    secured: Secured, http: aiohttp.ClientSession
) -> None:
    s = secured
    now = int(time.time())
    public_pem = s.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps(s.claims()).encode())
    confused = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    unsigned = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    bad = {
        "expired": s.hs(exp=now - 3600, iat=now - 7200),
        "not yet valid": s.hs(nbf=now + 3600),
        "wrong issuer": s.hs(iss="https://evil.example"),
        "wrong audience": s.hs(aud="another-api"),
        "alg none": f"{unsigned}.{payload}.",
        "wrong key": jwt.encode(s.claims(), "x" * 48, algorithm="HS256"),
        "HS256 signed with the RS256 public key": f"{header}.{payload}.{_b64(confused)}",
        "RS256 with an unknown key": jwt.encode(
            s.claims(),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "k1"},
        ),
        "garbage": "not-a-token",
    }
    messages: set[str] = set()
    for what, token in bad.items():
        async with http.get(
            f"{s.url}/api/v1/runs", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 401, what
            assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"], what
            body = await _json(resp)
            _error(body, "invalid_token")
            text = json.dumps(body)
            for leak in ("evil.example", "another-api", "alice", s.tenant_a, "signature"):
                assert leak not in text, (what, leak)
            messages.add(body["error"]["message"])
    assert len(messages) == 1, messages  # the same answer whatever is wrong
    async with http.get(f"{s.url}/api/v1/runs") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        _error(await _json(resp), "unauthorized")


async def test_rs256_tokens_from_the_jwks_are_accepted_and_keys_rotate(
    secured: Secured, http: aiohttp.ClientSession
) -> None:
    s = secured
    token = jwt.encode(
        s.claims(roles=["viewer"]), s.rsa_key, algorithm="RS256", headers={"kid": "k1"}
    )
    for url in s.urls:
        async with http.get(
            f"{url}/api/v1/runs", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200, await resp.text()
    # The provider rotates in a new key: the unknown kid makes the API refetch the JWKS.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    s.jwks.keys = [
        *s.jwks.keys,
        {**json.loads(RSAAlgorithm.to_jwk(new_key.public_key())), "kid": "k2", "alg": "RS256"},
    ]
    await asyncio.sleep(0.6)  # past the refetch floor
    rotated = jwt.encode(
        s.claims(roles=["viewer"]), new_key, algorithm="RS256", headers={"kid": "k2"}
    )
    async with http.get(
        f"{s.url}/api/v1/runs", headers={"Authorization": f"Bearer {rotated}"}
    ) as resp:
        assert resp.status == 200, await resp.text()


# -- authorisation and tenant isolation ----------------------------------------------------


async def test_a_viewer_cannot_create_a_run(secured: Secured, http: aiohttp.ClientSession) -> None:
    s = secured
    viewer = s.auth(s.tenant_a, "vera", ("viewer",))
    async with http.post(f"{s.url}/api/v1/runs", json={"prompt": "x"}, headers=viewer) as resp:
        assert resp.status == 403
        _error(await _json(resp), "forbidden")
    async with http.get(f"{s.url}/api/v1/runs", headers=viewer) as resp:
        assert resp.status == 200


async def test_tenants_cannot_see_each_others_runs(
    secured: Secured, http: aiohttp.ClientSession
) -> None:
    s = secured
    alice = s.auth(s.tenant_a, "alice")
    bob = s.auth(s.tenant_b, "bob")
    run_a = await _create_run(http, s, alice)
    run_b = await _create_run(http, s, bob)
    assert run_a["tenant"] == s.tenant_a  # the tenant came from the token
    a = run_a["id"]

    for path in (f"/api/v1/runs/{a}", f"/api/v1/runs/{a}/events", f"/api/v1/runs/{a}/artifacts"):
        async with http.get(f"{s.url}{path}", headers=bob) as resp:
            assert resp.status == 403, path
            _error(await _json(resp), "tenant_forbidden")
    async with http.post(f"{s.url}/api/v1/runs/{a}/stream-token", headers=bob) as resp:
        assert resp.status == 403
    async with http.get(f"{s.url}/api/v1/runs?tenant={s.tenant_a}", headers=bob) as resp:
        assert resp.status == 403
    async with http.post(
        f"{s.url}/api/v1/runs", json={"tenant": s.tenant_a, "prompt": "x"}, headers=bob
    ) as resp:
        assert resp.status == 403
    async with http.get(f"{s.url}/api/v1/runs", headers=bob) as resp:
        ids = [item["id"] for item in (await _json(resp))["items"]]
        assert run_b["id"] in ids
        assert a not in ids
    async with http.get(f"{s.url}/api/v1/runs/{uuid.uuid4()}", headers=bob) as resp:
        assert resp.status == 404  # unknown stays 404; only existing foreign runs are 403

    # A platform admin may read across tenants.
    root = s.auth("ops", "root", ("platform-admin",))
    async with http.get(f"{s.url}/api/v1/runs/{a}", headers=root) as resp:
        assert resp.status == 200

    # Stream tokens: run-scoped, for EventSource clients that cannot send headers.
    async with http.post(f"{s.url}/api/v1/runs/{run_b['id']}/stream-token", headers=bob) as resp:
        assert resp.status == 201
        minted = await _json(resp)
    assert minted["expiresIn"] == 60
    b_token = minted["token"]
    async with http.get(f"{s.url}/api/v1/runs/{a}/events?access_token={b_token}") as resp:
        assert resp.status == 401  # B's token names B's run, not A's
        _error(await _json(resp), "invalid_token")
    async with http.get(f"{s.url}/api/v1/runs/{run_b['id']}?access_token={b_token}") as resp:
        assert resp.status == 401  # only the events route takes stream tokens
    async with http.get(f"{s.urls[1]}{minted['eventsUrl']}") as resp:
        assert resp.status == 200  # any replica honours it
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert (await resp.content.readline()).startswith(b"retry:")


# -- rate limits ----------------------------------------------------------------------------


async def _hammer(
    http: aiohttp.ClientSession, s: Secured, headers: dict[str, str], n: int
) -> list[aiohttp.ClientResponse]:
    out = []
    for i in range(n):
        async with http.get(f"{s.urls[i % 2]}/api/v1/runs", headers=headers) as resp:
            await resp.read()
            out.append(resp)
    return out


async def test_rate_limits_trip_across_replicas(
    secured: Secured, http: aiohttp.ClientSession
) -> None:
    s = secured
    tenant = f"rl-{uuid.uuid4().hex[:6]}"
    # One principal, alternating between the two replicas: the shared window trips at the limit.
    carol = s.auth(tenant, "carol", ("viewer",))
    answers = await _hammer(http, s, carol, PRINCIPAL_LIMIT)
    assert [r.status for r in answers] == [200] * PRINCIPAL_LIMIT
    for url in s.urls:
        async with http.get(f"{url}/api/v1/runs", headers=carol) as resp:
            assert resp.status == 429
            retry_after = int(resp.headers["Retry-After"])
            assert 1 <= retry_after <= WINDOW_SECONDS
            body = await _json(resp)
            _error(body, "rate_limited")
            assert "principal" in body["error"]["message"]

    # The tenant's budget is shared by its users: after TENANT_LIMIT requests, everyone waits.
    used = PRINCIPAL_LIMIT  # carol's admitted requests count for the tenant too
    users = iter(range(100))
    while used < TENANT_LIMIT:
        batch = min(PRINCIPAL_LIMIT - 1, TENANT_LIMIT - used)
        answers = await _hammer(http, s, s.auth(tenant, f"u{next(users)}", ("viewer",)), batch)
        assert all(r.status == 200 for r in answers)
        used += batch
    async with http.get(
        f"{s.urls[1]}/api/v1/runs", headers=s.auth(tenant, "dave", ("viewer",))
    ) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert "tenant" in (await _json(resp))["error"]["message"]
    # Another tenant is unaffected.
    async with http.get(
        f"{s.url}/api/v1/runs", headers=s.auth(f"{tenant}-x", "erin", ("viewer",))
    ) as resp:
        assert resp.status == 200

    counted = 0.0
    for url in s.urls:
        async with http.get(f"{url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("rate_limit_violations_total{") and f'tenant="{tenant}"' in line:
                    counted += float(line.rsplit(" ", 1)[1])
    assert counted >= 3


async def test_open_streams_per_tenant_are_capped(
    secured: Secured, http: aiohttp.ClientSession
) -> None:
    s = secured
    alice = s.auth(s.tenant_a, "alice-streams")
    run = await _create_run(http, s, alice)
    events = f"/api/v1/runs/{run['id']}/events"
    opened = []
    try:
        for i in range(STREAM_CAP):
            resp = await http.get(f"{s.urls[i % 2]}{events}", headers=alice)
            assert resp.status == 200
            await resp.content.readline()
            opened.append(resp)
        async with http.get(f"{s.url}{events}", headers=alice) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            _error(await _json(resp), "too_many_streams")
        other = await _create_run(http, s, s.auth(s.tenant_b, "bo"))
        async with http.get(  # another tenant has its own slots
            f"{s.url}/api/v1/runs/{other['id']}/events", headers=s.auth(s.tenant_b, "bo")
        ) as resp:
            assert resp.status == 200
    finally:
        for resp in opened:
            resp.close()
    # Closing a stream frees its slot (on the replica's next write or heartbeat).
    for _ in range(50):
        async with http.get(f"{s.url}{events}", headers=alice) as resp:
            if resp.status == 200:
                break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("stream slots were never released")


# -- input limits ---------------------------------------------------------------------------


async def test_bodies_are_checked(secured: Secured, http: aiohttp.ClientSession) -> None:
    s = secured
    alice = s.auth(s.tenant_a, "alice-bodies")
    runs = f"{s.url}/api/v1/runs"
    async with http.post(
        runs,
        data=json.dumps({"prompt": "x" * (MAX_BODY + 1)}),
        headers={**alice, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        _error(await _json(resp), "payload_too_large")
    async with http.post(
        runs, data=b'{"prompt": ', headers={**alice, "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        _error(await _json(resp), "invalid_json")
    async with http.post(
        runs,
        data=b"prompt=x",
        headers={**alice, "Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 415
        _error(await _json(resp), "unsupported_media_type")
    for body, loc in (
        ({"prompt": "x", "bogus": 1}, "bogus"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x", "options": {"maxSteps": "many"}}, "options.maxSteps"),
        (["not", "an", "object"], ""),
    ):
        async with http.post(runs, json=body, headers=alice) as resp:
            assert resp.status == 400, body
            error = await _json(resp)
            _error(error, "validation_error")
            assert loc in {d["loc"] for d in error["error"]["details"]} or loc == "", error


# -- tenants, audit and usage through the API ----------------------------------------------------


async def test_tenant_admin_endpoints_are_audited(
    secured: Secured, http: aiohttp.ClientSession
) -> None:
    s = secured
    root = s.auth("ops", "root", ("platform-admin",))
    name = f"sec-t-{uuid.uuid4().hex[:5]}"
    body = {"name": name, "spec": {"displayName": "Security test"}}
    async with http.post(
        f"{s.url}/api/v1/tenants", json=body, headers=s.auth(s.tenant_a, "tam", ("tenant-admin",))
    ) as resp:
        assert resp.status == 403  # tenant admins do not create tenants
    async with http.post(
        f"{s.url}/api/v1/tenants", json=body, headers={**root, "X-Request-ID": f"create-{name}"}
    ) as resp:
        created = await _json(resp)
        assert resp.status == 201, created
    assert created["name"] == name
    assert created["spec"]["displayName"] == "Security test"
    async with http.post(f"{s.url}/api/v1/tenants", json=body, headers=root) as resp:
        assert resp.status == 409

    own_admin = s.auth(name, "tina", ("tenant-admin",))
    async with http.get(f"{s.url}/api/v1/tenants/{name}", headers=own_admin) as resp:
        assert resp.status == 200
        assert (await _json(resp))["name"] == name
    async with http.get(
        f"{s.url}/api/v1/tenants/{name}", headers=s.auth(s.tenant_b, "t", ("tenant-admin",))
    ) as resp:
        assert resp.status == 403
    async with http.delete(f"{s.url}/api/v1/tenants/{name}", headers=own_admin) as resp:
        assert resp.status == 403
    async with http.delete(
        f"{s.url}/api/v1/tenants/{name}", headers={**root, "X-Request-ID": f"delete-{name}"}
    ) as resp:
        assert resp.status == 202

    async with http.get(f"{s.url}/api/v1/audit?limit=1", headers=own_admin) as resp:
        page1 = await _json(resp)
        assert resp.status == 200, page1
    async with http.get(
        f"{s.url}/api/v1/audit?limit=1&cursor={page1['nextCursor']}", headers=own_admin
    ) as resp:
        page2 = await _json(resp)
    entries = page1["items"] + page2["items"]
    assert [(e["action"], e["actor"], e["requestId"]) for e in entries] == [
        ("tenant.delete", "root", f"delete-{name}"),
        ("tenant.create", "root", f"create-{name}"),
    ]
    async with http.get(
        f"{s.url}/api/v1/audit?action=tenant.create&actor=root", headers=own_admin
    ) as resp:
        assert [e["action"] for e in (await _json(resp))["items"]] == ["tenant.create"]
    async with http.get(f"{s.url}/api/v1/audit", headers=s.auth(name, "m")) as resp:
        assert resp.status == 403  # members do not read the audit log

    # Usage from Postgres, for the caller's own tenant only.
    admin_a = s.auth(s.tenant_a, "ada", ("tenant-admin",))
    async with http.get(f"{s.url}/api/v1/tenants/{s.tenant_a}/usage", headers=admin_a) as resp:
        usage = await _json(resp)
        assert resp.status == 200, usage
    assert usage["tenant"] == s.tenant_a
    assert usage["runsTotal"] >= 1
    assert usage["runsByPhase"].get("pending", 0) >= 1
    async with http.get(f"{s.url}/api/v1/tenants/{s.tenant_b}/usage", headers=admin_a) as resp:
        assert resp.status == 403
    async with http.get(f"{s.url}/api/v1/audit", headers=admin_a) as resp:
        actions = {(e["action"], e["actor"]) for e in (await _json(resp))["items"]}
    assert ("run.create", "alice") in actions
