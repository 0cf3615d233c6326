"""The database roles: the owner runs migrations, the API and operator run as sba_app.

Migration 0008 creates `sba_app` (LOGIN, NOSUPERUSER, NOBYPASSRLS, owns nothing)
without a password; `sba-agentic migrate` sets one when SBA_APP_DB_PASSWORD is
given. `app_dsn(owner_dsn)` turns the owner's DSN into sba_app's on the same
server and database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import asyncpg

APP_ROLE: Final = "sba_app"
APP_PASSWORD_ENV: Final = "SBA_APP_DB_PASSWORD"
_URL_SCHEMES: Final = ("postgres", "postgresql")


def app_dsn(owner_dsn: str, password: str | None = None) -> str:
    """The DSN for sba_app on the owner's server and database.

    The owner's password (in the userinfo or a `password=` query parameter) is
    never carried over; `password` is sba_app's, or none (trust / peer auth).
    """
    parts = urlsplit(owner_dsn)
    if parts.scheme not in _URL_SCHEMES:
        raise ValueError("app_dsn needs a postgresql:// URL DSN")
    host = parts.netloc.rpartition("@")[2]
    userinfo = quote(APP_ROLE, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("user", "password")]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}", query=urlencode(query)))


async def set_app_password(conn: asyncpg.Connection[asyncpg.Record], password: str) -> None:
    """Set sba_app's password (the owner needs CREATEROLE or superuser)."""
    # ALTER ROLE takes no bind parameters; format('%L') quotes the literal server-side.
    statement = await conn.fetchval(
        "select format('alter role %I password %L', $1::text, $2::text)", APP_ROLE, password
    )
    await conn.execute(statement)
