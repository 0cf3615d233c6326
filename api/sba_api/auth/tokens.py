"""Verifying access tokens into a `Principal`.

The algorithm is pinned per key type before any signature check: HS256 tokens
are verified only with the configured shared secret, RS*/ES* tokens only with a
JWKS key of the matching type. So `alg: none` is refused, and a token whose
header says HS256 can never be checked against a public key (the classic
algorithm-confusion attack). Every failure is the same `InvalidToken` with a
reason for the server log; nothing about the token goes back to the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import jwt

from sba_api.auth.jwks import JwksKeys
from sba_api.settings import AuthSettings
from sba_core.auth.permissions import Principal

HMAC_ALGORITHMS: Final = frozenset({"HS256"})
ASYMMETRIC_ALGORITHMS: Final[Mapping[str, str]] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "ES256": "EC",
    "ES384": "EC",
}
MAX_TOKEN_CHARS: Final = 8192
MAX_GROUPS: Final = 100
_TENANT: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ROLE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$")


class InvalidToken(Exception):
    """The token cannot be trusted; `str(exc)` is for the server's log only."""


class KeysUnavailable(Exception):
    """The signing keys cannot be loaded right now (the JWKS endpoint is down)."""


def _roles(raw: Any) -> frozenset[str]:
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise InvalidToken("roles claim must be a list of strings")
    return frozenset(r for r in raw if _ROLE.match(r))


def _groups(raw: Any) -> frozenset[str]:
    """Groups are optional: a malformed claim grants none rather than refusing the token."""
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(g for g in raw[:MAX_GROUPS] if isinstance(g, str) and 0 < len(g) <= 253)


class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._jwks = (
            JwksKeys(
                url=settings.jwks_url,
                path=settings.jwks_file,
                cache_seconds=settings.jwks_cache_seconds,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
            )
            if settings.jwks_url or settings.jwks_file
            else None
        )

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def _key(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {type(exc).__name__}") from exc
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidToken("no alg")
        if alg in HMAC_ALGORITHMS:
            if not self._settings.hs256_secret:
                raise InvalidToken(f"{alg} tokens are not accepted here")
            return self._settings.hs256_secret, alg
        kty = ASYMMETRIC_ALGORITHMS.get(alg)
        if kty is None or self._jwks is None:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("kid must be a string")
        try:
            jwk = await self._jwks.find(kid)
        except Exception as exc:
            raise KeysUnavailable(str(exc)) from exc
        if jwk is None:
            raise InvalidToken("unknown signing key")
        if jwk.get("kty") != kty or jwk.get("alg", alg) != alg:
            raise InvalidToken(f"key {kid!r} is not a {alg} key")
        try:
            return jwt.PyJWK(jwk, algorithm=alg).key, alg
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"unusable JWK: {exc}") from exc

    async def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("empty or oversized token")
        key, alg = await self._key(token)
        config = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from exc
        user = claims.get("sub")
        tenant = claims.get(config.tenant_claim)
        if not isinstance(user, str) or not user or len(user) > 253:
            raise InvalidToken("sub must be a non-empty string")
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            raise InvalidToken(f"{config.tenant_claim} claim must be a tenant name")
        return Principal(
            user=user,
            tenant=tenant,
            roles=_roles(claims.get(config.roles_claim, [])),
            groups=_groups(claims.get(config.groups_claim, [])),
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
