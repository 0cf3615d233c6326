"""Our own long-running processes (API, operator, node agent) as supervised children.

`make dev` and the test fixtures start them the same way: `python -m sba_cli.main
<command>` with an explicit environment, a log file, and a readiness check.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from sba_devstack.procs import spawn, stop, wait_until


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: the URL answers 2xx."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return 200 <= int(resp.status) < 300
        except (urllib.error.URLError, OSError):
            return False

    return check


class Service:
    """One `sba-agentic <command>` child process that can be started, killed and restarted."""

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        log_path: Path,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.command = command
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self._ready = ready
        self._ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Service:
        args = [sys.executable, "-m", "sba_cli.main", self.command]
        self._proc = spawn(args, self.log_path, env=self.env)
        if self._ready is not None:
            wait_until(self.command, self._ready, self._proc, self.log_path, self._ready_timeout)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup runs in the child."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def restart(self) -> Service:
        self.stop()
        return self.start()
