"""Signing keys of an OIDC provider: a JWKS from a URL (cached, refreshed) or a file.

A token naming an unknown `kid` triggers one refetch (at most every
`min_refresh_seconds`), so a provider's key rotation needs no restart while a
flood of tokens with made-up kids cannot turn into a flood of fetches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 256 * 1024


class JwksUnavailable(Exception):
    """No keys could be loaded (and none are cached)."""


def parse_jwks(raw: Any) -> dict[str, dict[str, Any]]:
    """The JWKS's signing keys by kid (a key without kid is stored under '')."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("keys"), list):
        raise ValueError("a JWKS is an object with a `keys` list")
    keys: dict[str, dict[str, Any]] = {}
    for jwk in raw["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("kty") not in ("RSA", "EC"):
            continue  # symmetric ("oct") keys never come from a JWKS we trust
        if jwk.get("use", "sig") != "sig":
            continue
        keys[str(jwk.get("kid", ""))] = dict(jwk)
    return keys


class JwksKeys:
    """Keys from `url` and/or `path`; `find(kid)` returns a JWK dict or None."""

    def __init__(
        self,
        *,
        url: str | None,
        path: Path | None,
        cache_seconds: float,
        min_refresh_seconds: float,
    ) -> None:
        self._url = url
        self._path = path
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch_url(self, url: str) -> dict[str, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
            )
        async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise JwksUnavailable(f"the JWKS endpoint answered {resp.status}")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise JwksUnavailable("the JWKS is too large")
        return parse_jwks(json.loads(body))

    async def _load(self) -> None:
        keys: dict[str, dict[str, Any]] = {}
        if self._path is not None:
            text = await asyncio.to_thread(self._path.read_text)
            keys.update(parse_jwks(json.loads(text)))
        if self._url is not None:
            keys.update(await self._fetch_url(self._url))
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            if now - self._attempted_at < self._min_refresh:
                if not self._keys:
                    raise JwksUnavailable("no signing keys loaded")
                return  # just tried (or someone else just loaded them)
            if not force and now - self._loaded_at < self._cache_seconds:
                return
            self._attempted_at = now
            try:
                await self._load()
            except (OSError, ValueError, aiohttp.ClientError, TimeoutError, JwksUnavailable) as exc:
                if not self._keys:
                    log.warning("cannot load the JWKS: %s", exc)
                    raise JwksUnavailable(str(exc)) from exc
                log.warning("cannot refresh the JWKS (keeping %d keys): %s", len(self._keys), exc)

    async def find(self, kid: str | None) -> dict[str, Any] | None:
        if time.monotonic() - self._loaded_at >= self._cache_seconds:
            await self._refresh(force=False)
        jwk = self._lookup(kid)
        if jwk is None:
            await self._refresh(force=True)
            jwk = self._lookup(kid)
        return jwk

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid: acceptable only when the JWKS holds a single key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None
