from __future__ import annotations

import pytest

from sba_core.step_token import InvalidStepToken, StepClaims, mint_step_token, verify_step_token

SECRET = "a-test-secret-that-is-at-least-32-bytes"

CLAIMS = StepClaims(
    run_id="r1",
    tenant="demo",
    namespace="tenant-demo",
    run_name="run-x",
    step_id="search",
    attempt=1,
    tool="knowledge.search",
)


def test_round_trip() -> None:
    token = mint_step_token(SECRET, CLAIMS, ttl_seconds=60)
    assert verify_step_token(SECRET, token) == CLAIMS


def test_wrong_secret_refused() -> None:
    token = mint_step_token(SECRET, CLAIMS, ttl_seconds=60)
    with pytest.raises(InvalidStepToken):
        verify_step_token("another-secret-that-is-32-bytes-long", token)


def test_expired_refused() -> None:
    token = mint_step_token(SECRET, CLAIMS, ttl_seconds=10, now=1_000_000)
    with pytest.raises(InvalidStepToken, match="expired"):
        verify_step_token(SECRET, token)


def test_alg_none_refused() -> None:
    import jwt

    forged = jwt.encode({**CLAIMS.model_dump(), "aud": "sba-tool-gateway"}, None, algorithm="none")
    with pytest.raises(InvalidStepToken):
        verify_step_token(SECRET, forged)
