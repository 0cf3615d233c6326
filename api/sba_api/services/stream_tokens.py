"""Minting run-scoped stream tokens (see sba_api.auth.stream)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from sba_api.auth.stream import mint_stream_token
from sba_api.schemas import StreamToken
from sba_api.services.runs import RunService, run_links
from sba_core.auth.permissions import Principal


class StreamTokenService:
    def __init__(self, runs: RunService, secret: str, ttl_seconds: int) -> None:
        self._runs = runs
        self._secret = secret
        self._ttl = ttl_seconds

    async def mint(self, principal: Principal, raw_run_id: str) -> StreamToken:
        run_id = str(await self._runs.authorize(principal, raw_run_id))
        token, expires = mint_stream_token(self._secret, principal, run_id, self._ttl)
        return StreamToken(
            token=token,
            expires_at=datetime.fromtimestamp(expires, UTC),
            expires_in=self._ttl,
            events_url=f"{run_links(run_id).events}?access_token={quote(token)}",
        )
