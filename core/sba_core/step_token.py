"""Step tokens: the narrow credential a tool pod uses to talk to the tool gateway.

A token is a short-lived HS256 JWT scoped to one attempt of one step of one run;
it grants nothing else, so a leaked token is worth one tool call.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from pydantic import Field

from sba_core.models.base import WireModel

AUDIENCE = "sba-tool-gateway"
ISSUER = "sba-operator"
ALGORITHM = "HS256"


class StepClaims(WireModel):
    run_id: str
    tenant: str
    namespace: str
    run_name: str
    step_id: str
    attempt: int = Field(ge=1)
    tool: str


class InvalidStepToken(ValueError):
    pass


def mint_step_token(
    secret: str, claims: StepClaims, ttl_seconds: int, now: float | None = None
) -> str:
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {
        **claims.model_dump(mode="json"),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": issued,
        "nbf": issued - 5,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_step_token(secret: str, token: str) -> StepClaims:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "aud", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidStepToken(str(exc)) from exc
    for key in ("iss", "aud", "iat", "nbf", "exp"):
        payload.pop(key, None)
    try:
        return StepClaims.model_validate(payload)
    except ValueError as exc:
        raise InvalidStepToken(f"malformed claims: {exc}") from exc
