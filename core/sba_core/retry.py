"""Retry arithmetic: exponential backoff with deterministic jitter, and failure classes.

Pure: the same run, step and attempt always get the same delay, so a decision
repeated after an operator crash computes the same `nextAttemptAt`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum

from sba_core.models.run import RetryPolicy


class FailureKind(StrEnum):
    TRANSIENT = "transient"
    """Worth another attempt: the tool exited 1, the pod was lost, the Job hit its deadline."""
    PERMANENT = "permanent"
    """The tool's own verdict (exit 2, a reported error), bad params, a contract violation."""


# Job failure reasons (batch/v1 Job condition `Failed`) that are the tool's verdict.
PERMANENT_JOB_REASONS: frozenset[str] = frozenset({"PodFailurePolicy"})


def classify_job_failure(reason: str | None, tool_reported_failure: bool) -> FailureKind:
    """A failed Job: permanent when the tool said so (exit 2 → FailJob, or a posted error)."""
    if tool_reported_failure or (reason or "") in PERMANENT_JOB_REASONS:
        return FailureKind.PERMANENT
    return FailureKind.TRANSIENT


def _unit(seed: str) -> float:
    """A number in [0, 1) derived from `seed`."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def backoff_seconds(policy: RetryPolicy, failed_attempt: int, seed: str = "") -> float:
    """Seconds to wait after attempt `failed_attempt` (1-based) failed transiently."""
    if failed_attempt < 1:
        raise ValueError("attempts are counted from 1")
    exponent = min(failed_attempt - 1, 30)
    delay = float(min(policy.backoff_base_seconds * (2**exponent), policy.backoff_max_seconds))
    # Jitter shortens the delay by up to `jitter` of it, so retries of many runs spread out
    # and the delay never exceeds the cap.
    return delay * (1.0 - policy.jitter * _unit(f"{seed}:{failed_attempt}"))


def should_retry(policy: RetryPolicy, kind: FailureKind, failed_attempt: int) -> bool:
    return kind is FailureKind.TRANSIENT and failed_attempt < policy.max_attempts


def next_attempt_at(
    policy: RetryPolicy, failed_attempt: int, failed_at: datetime, seed: str = ""
) -> datetime:
    return failed_at + timedelta(seconds=backoff_seconds(policy, failed_attempt, seed))
