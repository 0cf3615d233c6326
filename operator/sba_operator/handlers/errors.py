"""The one place foreign exceptions become Kopf's TemporaryError / PermanentError.

Temporary: the API server, Postgres or Redis is briefly unavailable, or a
write raced another writer (409) — worth another try after a delay.
Permanent: retrying cannot help (a 4xx other than 408/409/429, a bug).
Bad *objects* never get here: the pure reconcile turns them into a failed run.
"""

from __future__ import annotations

import asyncio

import kopf
from redis import exceptions as redis_errors

from sba_operator.kube import ApiError, Conflict, KubeUnavailable, NotFound
from sba_operator.settings import SettingsError
from sba_store.errors import StoreError

_PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    AssertionError,
    LookupError,
    ValueError,
    NotImplementedError,
)
"""A bug in our code: retrying the same input gives the same crash."""


def to_kopf(exc: BaseException) -> kopf.TemporaryError | kopf.PermanentError:
    """Classify `exc` (never raises)."""
    if isinstance(exc, kopf.TemporaryError | kopf.PermanentError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Conflict):
        return kopf.TemporaryError(text, delay=1)
    if isinstance(exc, NotFound):
        return kopf.PermanentError(text)
    if isinstance(exc, ApiError):
        if exc.status in (408, 429) or exc.status >= 500:
            return kopf.TemporaryError(text, delay=5)
        if exc.status in (401, 403):  # RBAC may be fixed while we wait
            return kopf.TemporaryError(text, delay=30)
        return kopf.PermanentError(text)
    if isinstance(exc, KubeUnavailable):
        return kopf.TemporaryError(text, delay=5)
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return kopf.TemporaryError(text, delay=3)
    if isinstance(exc, StoreError):
        # Connection trouble, serialization failures, a migration being applied:
        # all worth another try; the store has already translated asyncpg's errors.
        return kopf.TemporaryError(text, delay=3)
    if isinstance(exc, OSError | ConnectionError | asyncio.TimeoutError | TimeoutError):
        return kopf.TemporaryError(text, delay=3)
    if isinstance(exc, SettingsError):
        return kopf.PermanentError(text)
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return kopf.PermanentError(text)
    return kopf.TemporaryError(text, delay=10)
