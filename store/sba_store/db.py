"""Connection pools and tenant-scoped transactions.

Callers create the pool (one per process, at start-up) and pass it to the
repositories; nothing here is a module-level singleton.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from pgvector import Vector
from pgvector.asyncpg import register_vector

from sba_store.errors import translated

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = Any


class SchemaMissingError(RuntimeError):
    """The database has not been migrated (the vector type is missing)."""


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Per-connection codecs: jsonb <-> Python objects, vector <-> list of floats."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )
    try:
        await register_vector(conn)
    except ValueError as err:
        raise SchemaMissingError(
            "the vector type is missing; run `sba-agentic migrate` against this database"
        ) from err
    # Decode vectors as plain lists so callers never see pgvector's own type.
    await conn.set_type_codec(
        "vector",
        schema="public",
        encoder=lambda value: Vector(list(value)).to_binary(),
        decoder=lambda data: Vector.from_binary(data).to_list(),
        format="binary",
    )


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float | None = 60.0,
    application_name: str = "sba-agentic",
) -> Pool:
    """Open a pool whose connections decode jsonb and vector columns."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=init_connection,
        server_settings={"application_name": application_name},
    )
    if pool is None:  # only None when called without awaiting; keeps mypy honest
        raise RuntimeError("asyncpg.create_pool returned no pool")
    return pool


@asynccontextmanager
async def tenant_transaction(pool: Pool, tenant_id: str) -> AsyncIterator[Connection]:
    """A transaction with `app.current_tenant` set, for row-level security policies.

    Every tenant-scoped query runs in one of these: under sba_app the policies
    of migration 0008 show and accept only this tenant's rows. The setting is
    transaction-local (set_tenant uses set_config(..., true)) so it can never
    leak to the next user of the pooled connection.
    """
    if not tenant_id:
        raise ValueError("tenant_transaction needs a tenant id")
    with translated("run a tenant transaction"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("select set_tenant($1)", tenant_id)
            yield conn


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    """A plain transaction with no tenant set: tenant-scoped tables show no rows in it."""
    with translated("run a transaction"):
        async with pool.acquire() as conn, conn.transaction():
            yield conn


async def ping(pool: Pool) -> None:
    """Raise StoreUnavailable unless the database answers a trivial query."""
    async with transaction(pool) as conn:
        await conn.fetchval("select 1")
