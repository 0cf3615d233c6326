"""Access-token verification, stream tokens, permissions and the auth middleware."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sba_api.app import create_app
from sba_api.auth.stream import InvalidStreamToken, mint_stream_token, verify_stream_token
from sba_api.auth.tokens import InvalidToken, TokenVerifier, bearer_token
from sba_api.keys import Services
from sba_api.routes import ROUTES
from sba_api.services.access import TenantForbidden, scope_tenant
from sba_api.services.gateway import GatewayService
from sba_api.services.system import SystemService
from sba_api.services.tool_catalog import ToolCatalogService
from sba_api.settings import AuthSettings, Settings, SettingsError
from sba_core.auth.dev_tokens import mint_dev_token
from sba_core.auth.permissions import Permission, Principal, permissions_for
from sba_core.tools.registry import builtin_registry

SECRET = "unit-test-jwt-secret-0123456789abcdef"
ISS, AUD = "sba-agentic", "sba-agentic-api"


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "ann",
        "tenant": "acme",
        "roles": ["member"],
        "iat": now,
        "exp": now + 300,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks_file(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Path:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                    {**ec_jwk, "kid": "ec-1", "alg": "ES256"},
                ]
            }
        )
    )
    return path


def _verifier(**over: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(hs256_secret=SECRET, **over))


async def test_a_valid_hs256_token_gives_the_principal() -> None:
    token = jwt.encode(_claims(roles=["member", "approver", "bogus"]), SECRET, algorithm="HS256")
    principal = await _verifier().verify(token)
    assert principal == Principal(
        user="ann", tenant="acme", roles=frozenset({"member", "approver", "bogus"})
    )
    assert principal.can(Permission.RUNS_CREATE)
    assert principal.can(Permission.RUNS_APPROVE)
    assert not principal.can(Permission.AUDIT_READ)


async def test_dev_tokens_verify() -> None:
    token = mint_dev_token(SECRET, tenant="demo", user="dev", roles=["tenant-admin"])
    principal = await _verifier().verify(token)
    assert (principal.user, principal.tenant) == ("dev", "demo")
    assert principal.can(Permission.AUDIT_READ)


@pytest.mark.parametrize(
    "claims",
    [
        _claims(exp=int(time.time()) - 600),  # expired beyond the leeway
        _claims(nbf=int(time.time()) + 600),  # not yet valid
        _claims(iss="someone-else"),
        _claims(aud="another-api"),
        _claims(exp=None),  # exp is required
        _claims(sub=None),
        _claims(tenant=None),
        _claims(tenant="Not A Tenant"),
        _claims(roles={"admin": True}),
    ],
)
async def test_bad_claims_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        await _verifier().verify(jwt.encode(claims, SECRET, algorithm="HS256"))


async def test_the_leeway_tolerates_small_clock_skew() -> None:
    token = jwt.encode(_claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert (await _verifier(leeway_seconds=30).verify(token)).user == "ann"


async def test_wrong_key_alg_none_and_garbage_are_refused() -> None:
    verifier = _verifier()
    for token in (
        jwt.encode(_claims(), "another-secret-0123456789abcdef0123", algorithm="HS256"),
        jwt.encode(_claims(), None, algorithm="none"),
        jwt.encode(_claims(), SECRET * 2, algorithm="HS512"),
        "not.a.jwt",
        "",
        "x" * 10_000,
    ):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_unsigned_token_with_forged_header_is_refused() -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    with pytest.raises(InvalidToken):
        await _verifier().verify(f"{header}.{body}.")


async def test_rs256_and_es256_from_a_jwks_file(
    jwks_file: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_file=jwks_file))
    rs = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(_claims(sub="bob"), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert (await verifier.verify(rs)).user == "ann"
    assert (await verifier.verify(es)).user == "bob"
    # A key used with the wrong algorithm, an unknown kid, and HS256 with no secret configured.
    wrong_kid = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    unknown = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "nope"})
    hs = jwt.encode(_claims(), SECRET, algorithm="HS256")
    for token in (wrong_kid, unknown, hs):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
    await verifier.close()


async def test_algorithm_confusion_is_refused(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token whose HMAC key is the RSA public key (the classic confusion attack)."""
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{_b64(signature)}"
    for settings in (
        AuthSettings(jwks_file=jwks_file),  # no HS secret: HS256 is refused outright
        AuthSettings(jwks_file=jwks_file, hs256_secret=SECRET),  # HS256 only with the secret
    ):
        verifier = TokenVerifier(settings)
        with pytest.raises(InvalidToken):
            await verifier.verify(forged)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_stream_tokens_are_run_scoped() -> None:
    who = Principal(user="ann", tenant="acme", roles=frozenset({"viewer"}))
    token, expires = mint_stream_token(SECRET, who, "run-1", 60)
    assert expires > time.time()
    grant = verify_stream_token(SECRET, token, "run-1")
    assert grant.principal == who
    with pytest.raises(InvalidStreamToken):
        verify_stream_token(SECRET, token, "run-2")
    with pytest.raises(InvalidStreamToken):
        verify_stream_token("another-secret-0123456789abcdef0123", token, "run-1")
    old, _ = mint_stream_token(SECRET, who, "run-1", 60, now=time.time() - 120)
    with pytest.raises(InvalidStreamToken):
        verify_stream_token(SECRET, old, "run-1")
    # A stream token is not an access token (its own audience), and vice versa.
    access = mint_dev_token(SECRET, tenant="acme", user="ann", roles=["viewer"])
    with pytest.raises(InvalidStreamToken):
        verify_stream_token(SECRET, access, "run-1")


async def test_stream_token_is_not_an_access_token() -> None:
    who = Principal(user="ann", tenant="acme", roles=frozenset({"viewer"}))
    token, _ = mint_stream_token(SECRET, who, "run-1", 60)
    with pytest.raises(InvalidToken):
        await _verifier().verify(token)


def test_tenant_scoping() -> None:
    ann = Principal(user="ann", tenant="acme", roles=frozenset({"member"}))
    assert scope_tenant(ann, None) == "acme"
    assert scope_tenant(ann, "acme") == "acme"
    with pytest.raises(TenantForbidden):
        scope_tenant(ann, "globex")
    root = Principal(user="root", tenant="ops", roles=frozenset({"platform-admin"}))
    assert scope_tenant(root, "globex") == "globex"


def test_every_api_route_names_a_permission_from_the_one_table() -> None:
    for route in ROUTES:
        if route.path.startswith("/api/v1"):
            assert route.permission is not None, route.path
            assert not route.public
            assert not route.step_token
    assert Permission.TENANTS_ADMIN in permissions_for(["platform-admin"])
    assert Permission.TENANTS_ADMIN not in permissions_for(["tenant-admin"])
    assert permissions_for(["viewer"]) == {
        Permission.RUNS_READ,
        Permission.TOOLS_READ,
        Permission.KNOWLEDGE_READ,
    }


def test_auth_settings_from_env(tmp_path: Path) -> None:
    base = {
        "DATABASE_URL": "postgresql://u@db/sba",
        "REDIS_URL": "redis://r:6379/0",
        "SBA_STEP_TOKEN_SECRET": "s" * 32,
    }
    with pytest.raises(SettingsError, match="SBA_JWT_HS256_SECRET"):
        Settings.from_env(base)
    with pytest.raises(SettingsError, match="at least 32"):
        Settings.from_env({**base, "SBA_JWT_HS256_SECRET": "short"})
    settings = Settings.from_env(
        {
            **base,
            "SBA_JWT_JWKS_FILE": str(tmp_path / "jwks.json"),
            "SBA_JWT_ISSUER": "https://idp.example/",
            "SBA_JWT_AUDIENCE": "sba",
            "SBA_JWT_TENANT_CLAIM": "https://sba.example/tenant",
            "SBA_RATE_LIMIT_TENANT_REQUESTS": "50",
        }
    )
    assert settings.auth.hs256_secret is None
    assert settings.auth.jwks_file == tmp_path / "jwks.json"
    assert (settings.auth.issuer, settings.auth.audience) == ("https://idp.example/", "sba")
    assert settings.auth.tenant_claim == "https://sba.example/tenant"
    assert len(settings.auth.stream_token_secret) >= 32
    assert settings.auth.stream_token_secret != base["SBA_STEP_TOKEN_SECRET"]
    assert settings.rate_limits.tenant_requests == 50


# -- the middleware, in-process ---------------------------------------------------------


async def any_tenant(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}}


def _services() -> Services:
    nothing = cast(Any, None)
    tools = ToolCatalogService(None, builtin_registry())
    return Services(
        runs=nothing,
        events=nothing,
        artifacts=nothing,
        knowledge=nothing,
        gateway=GatewayService(SECRET, nothing, tools, nothing, nothing),
        system=SystemService(nothing, nothing, tools, any_tenant),
        tenants=nothing,
        audit=nothing,
        stream_tokens=nothing,
    )


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(Settings(auth=AuthSettings(hs256_secret=SECRET)), services=_services())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def _auth(**claims: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(_claims(**claims), SECRET, algorithm="HS256")}


async def test_middleware_401_403_and_public_routes(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.get("/api/v1/tools")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert body["error"]["code"] == "unauthorized"

    resp = await client.get("/api/v1/tools", headers=_auth(exp=int(time.time()) - 600))
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    body = await resp.json()
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == "invalid_token"
    assert "exp" not in body["error"]["message"].lower().replace("expired", "")

    resp = await client.get("/api/v1/tools", headers=_auth(roles=["viewer"]))
    assert resp.status == 200
    resp = await client.get("/api/v1/tools", headers=_auth(roles=["nobody"]))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    # A viewer may not create runs: refused before the body is even read.
    resp = await client.post("/api/v1/runs", json={"prompt": "x"}, headers=_auth(roles=["viewer"]))
    assert resp.status == 403
    resp = await client.post(
        "/api/v1/runs", json={"tenant": "globex", "prompt": "x"}, headers=_auth()
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "tenant_forbidden"

    for path in ("/healthz", "/openapi.json", "/docs", "/metrics"):
        assert (await client.get(path)).status == 200, path
    # The gateway keeps its step-token auth; an access token is no step token.
    resp = await client.get("/internal/v1/step", headers=_auth())
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_step_token"
