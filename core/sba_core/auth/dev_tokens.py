"""HS256 access tokens for development and tests (`sba-agentic token`, `make dev`).

Production tokens come from an OIDC provider (RS256/ES256, verified against its
JWKS); these are signed with the shared `SBA_JWT_HS256_SECRET` the API also holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

import jwt

DEFAULT_ISSUER: Final = "sba-agentic"
DEFAULT_AUDIENCE: Final = "sba-agentic-api"
DEFAULT_TENANT_CLAIM: Final = "tenant"


def mint_dev_token(
    secret: str,
    *,
    tenant: str,
    user: str,
    roles: Iterable[str],
    ttl_seconds: int = 3600,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    tenant_claim: str = DEFAULT_TENANT_CLAIM,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": user,
        tenant_claim: tenant,
        "roles": sorted(set(roles)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        **(extra or {}),
    }
    return jwt.encode(payload, secret, algorithm="HS256")
