"""Run-scoped stream tokens for browser EventSource clients (which cannot set headers).

`POST /api/v1/runs/{id}/stream-token` mints one; the SSE route accepts it as
`?access_token=`. It is short-lived, carries its own audience (so it is never an
access token) and names one run (so it opens no other run's stream).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

import jwt

from sba_core.auth.permissions import Principal

AUDIENCE: Final = "sba-agentic-run-stream"
ISSUER: Final = "sba-agentic-api"
ALGORITHM: Final = "HS256"


class InvalidStreamToken(Exception):
    """For the server log only."""


@dataclass(frozen=True)
class StreamGrant:
    principal: Principal
    run_id: str


def mint_stream_token(
    secret: str, principal: Principal, run_id: str, ttl_seconds: int, now: float | None = None
) -> tuple[str, int]:
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": principal.user,
        "tenant": principal.tenant,
        "roles": sorted(principal.roles),
        "run": run_id,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), issued + ttl_seconds


def verify_stream_token(secret: str, token: str, run_id: str) -> StreamGrant:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=5,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "run"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidStreamToken(f"{type(exc).__name__}: {exc}") from exc
    if claims.get("run") != run_id:
        raise InvalidStreamToken("the token is for another run")
    roles = claims.get("roles", [])
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not isinstance(roles, list):
        raise InvalidStreamToken("malformed claims")
    principal = Principal(
        user=str(claims["sub"]), tenant=tenant, roles=frozenset(str(r) for r in roles)
    )
    return StreamGrant(principal=principal, run_id=run_id)
