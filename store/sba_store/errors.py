"""The store's own exceptions: callers never need to know asyncpg's.

Every repository call runs inside `translated()`, so the API maps these to
HTTP and the operator to Kopf's temporary errors without importing asyncpg.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

# SQLSTATE classes that mean "the server or the connection is not usable right now":
# 08 connection exception, 53 insufficient resources, 57 operator intervention.
_UNAVAILABLE_CLASSES = ("08", "53", "57")


class StoreError(RuntimeError):
    """A database operation failed in a way retrying will not fix."""


class StoreUnavailable(StoreError):
    """The database could not be reached or is shutting down; worth retrying."""


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "").startswith(_UNAVAILABLE_CLASSES)
    return False


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise asyncpg and connection failures as StoreError / StoreUnavailable."""
    try:
        yield
    except StoreError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        if _unavailable(exc):
            raise StoreUnavailable(f"the database is unavailable ({what}): {exc}") from exc
        raise StoreError(f"the database refused to {what}: {exc}") from exc
