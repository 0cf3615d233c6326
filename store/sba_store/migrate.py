"""The migration runner: applies `migrations/NNNN_name.sql` in order, once each.

- Each file runs in its own transaction together with its schema_migrations row,
  so a failed migration leaves nothing half-applied.
- A file that was applied and has since changed is an error: migrations are
  immutable once shipped; write a new one instead.
- Concurrent runners (several API replicas starting at once) serialise on a
  session advisory lock; the second one finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from sba_store.roles import APP_PASSWORD_ENV, set_app_password

_log = logging.getLogger(__name__)

DATABASE_URL_ENV: Final = "DATABASE_URL"
MIGRATIONS_DIR_ENV: Final = "SBA_MIGRATIONS_DIR"
_FILE_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant shared by every runner: the advisory-lock key.
_LOCK_KEY: Final = 0x5BA_0001

_CREATE_TABLE: Final = """
create table if not exists schema_migrations (
    version    integer primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now()
)
"""


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they are."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str  # sha256 of the file's bytes, hex


def migrations_dir() -> Path:
    """Where the SQL files are: env override, then package data, then the repo checkout."""
    override = os.environ.get(MIGRATIONS_DIR_ENV)
    if override:
        return Path(override)
    packaged = Path(__file__).resolve().parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path) -> list[Migration]:
    """Parse and order the migration files; reject stray or duplicate names."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"bad migration file name {path.name!r}: want NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}: {path.name}")
        data = path.read_bytes()
        found[version] = Migration(
            version=version,
            name=match.group(2),
            path=path,
            sql=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [found[version] for version in sorted(found)]


async def apply_migrations(
    conn: asyncpg.Connection[asyncpg.Record], directory: Path | None = None
) -> list[Migration]:
    """Apply the pending migrations on `conn`; return the ones applied now."""
    migrations = load_migrations(directory or migrations_dir())
    await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("select version, name, checksum from schema_migrations")
        applied = {row["version"]: row for row in rows}
        done: list[Migration] = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{row['name']} was changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            _log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
        return done
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate_dsn(
    dsn: str, directory: Path | None = None, *, app_password: str | None = None
) -> list[Migration]:
    """Connect to `dsn` (the owner), apply the pending migrations and disconnect.

    With `app_password`, also set the password of the application role sba_app
    (every time, so rotating it is re-running migrate).
    """
    conn = await asyncpg.connect(dsn)
    try:
        done = await apply_migrations(conn, directory)
        if app_password:
            await set_app_password(conn, app_password)
        return done
    finally:
        await conn.close()


def run() -> int:
    """`sba-agentic migrate`: apply migrations to the database in DATABASE_URL.

    DATABASE_URL here is the owner's; SBA_APP_DB_PASSWORD, when set, becomes
    sba_app's password (the API and operator connect as sba_app).
    """
    import asyncio

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dsn = os.environ.get(DATABASE_URL_ENV)
    if not dsn:
        print(f"error: {DATABASE_URL_ENV} is not set (postgresql://...)", file=sys.stderr)
        return 2
    try:
        done = asyncio.run(migrate_dsn(dsn, app_password=os.environ.get(APP_PASSWORD_ENV)))
    except (MigrationError, OSError, asyncpg.PostgresError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"applied {len(done)} migration(s)")
    return 0
