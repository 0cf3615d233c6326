"""Translate store failures into the API's error types.

The store already turns asyncpg's exceptions into its own (sba_store.errors);
this maps those onto HTTP: unavailable → 503, anything else → 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sba_api.errors import ApiError, ServiceUnavailable
from sba_store.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


class StoreFailed(ApiError):
    status = 500
    code = "database_error"


@contextmanager
def store_boundary(what: str) -> Iterator[None]:
    """Run a store call; StoreUnavailable → 503, other StoreError → 500."""
    try:
        yield
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"the database is unavailable while trying to {what}") from exc
    except StoreError as exc:
        log.exception("database error while trying to %s", what)
        raise StoreFailed(f"the database failed to {what}") from exc
