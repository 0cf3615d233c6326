"""A throwaway `redis-server` (Debian package) on a free loopback port.

Redis only carries live run-event notifications (Postgres is the source of truth), so
persistence is off. When `REDIS_URL` is set, that server is used and nothing starts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from sba_devstack.procs import StartupError, free_port, spawn, stop, wait_until


def _pong(port: int) -> bool:
    # Raw RESP so this module needs no client library.
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisServer:
    def __init__(self, state_dir: Path, port: int = 0) -> None:
        self.state_dir = state_dir.resolve()
        self._requested_port = port
        self.port = port
        self._external = os.environ.get("REDIS_URL") or None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._external:
            return self._external
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "redis.log"

    def start(self) -> RedisServer:
        if self._external or self._proc is not None:
            return self
        binary = shutil.which("redis-server")
        if binary is None:
            raise StartupError("redis-server not found; `apt-get install -y redis-server`")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._requested_port or free_port()
        # Config via argv (`--key value`), no config file: nothing on disk to go stale.
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.state_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        self._proc = spawn(args, self.log_path, cwd=self.state_dir)
        try:
            wait_until(
                "redis-server", lambda: _pong(self.port), self._proc, self.log_path, timeout=30
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
