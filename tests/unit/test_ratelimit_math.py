"""The shared sliding-window limiter's arithmetic (the window itself runs in Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

from sba_store.ratelimit import Decision, RateLimiter, per_window, retry_at, retry_seconds

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_retry_after_rounds_up_to_whole_seconds_never_zero() -> None:
    assert retry_seconds(0) == 1
    assert retry_seconds(1) == 1
    assert retry_seconds(1000) == 1
    assert retry_seconds(1001) == 2
    assert retry_seconds(59_999) == 60


def test_per_minute_limits_scale_to_the_window() -> None:
    assert per_window(120, 60) == 120
    assert per_window(2, 60) == 2
    assert per_window(120, 30) == 60
    assert per_window(1, 10) == 1  # never zero
    assert per_window(7, 90) == 11


def test_retry_at_is_a_whole_second_not_before_the_window_frees() -> None:
    refused = Decision(admitted=False, scope="tool_calls", retry_after_ms=1500)
    assert retry_at(T0, refused) == datetime(2025, 1, 2, 3, 4, 7, tzinfo=UTC)
    exact = Decision(admitted=False, retry_after_ms=2000)
    assert retry_at(T0, exact) == datetime(2025, 1, 2, 3, 4, 7, tzinfo=UTC)
    fractional_now = T0.replace(microsecond=400_000)
    assert retry_at(fractional_now, exact) == datetime(2025, 1, 2, 3, 4, 8, tzinfo=UTC)
    assert retry_at(T0, Decision(admitted=False, retry_after_ms=0)) > T0


def test_keys_are_per_tenant_and_per_scope() -> None:
    assert RateLimiter.tool_calls_key("acme") != RateLimiter.tool_calls_key("other")
    assert RateLimiter.tool_calls_key("acme") != RateLimiter.tenant_key("acme")
