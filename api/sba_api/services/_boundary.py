"""Translate store failures into the API's error types.

sba_api may not import asyncpg, so database errors are recognised by shape: an
asyncpg server error carries a `sqlstate`; a lost connection is an OSError or a
timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sba_api.errors import ApiError, ServiceUnavailable

log = logging.getLogger(__name__)


class StoreError(ApiError):
    status = 500
    code = "database_error"


def _is_connection_problem(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    name = type(exc).__name__
    return name in {
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "ConnectionFailureError",
        "TooManyConnectionsError",
        "CannotConnectNowError",
        "PoolConnectionProxyDestroyedError",
    }


@contextmanager
def store_boundary(what: str) -> Iterator[None]:
    """Run a store call; turn asyncpg/connection errors into StoreError/ServiceUnavailable."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        if _is_connection_problem(exc):
            raise ServiceUnavailable(f"the database is unavailable while trying to {what}") from exc
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(sqlstate, str):
            if sqlstate.startswith("08") or sqlstate.startswith("57"):
                raise ServiceUnavailable(
                    f"the database is unavailable while trying to {what}"
                ) from exc
            log.exception("database error while trying to %s (sqlstate %s)", what, sqlstate)
            raise StoreError(f"the database failed to {what}") from exc
        raise
