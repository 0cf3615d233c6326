"""Child-process helpers shared by the control plane and Redis: spawn, wait, stop.

Children get their own session (so a Ctrl-C in the terminal reaches only us, and we
stop them in order) and, where Linux allows, PR_SET_PDEATHSIG so they die with us
instead of being orphaned holding ports when the test process is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A component did not become ready; the message carries the tail of its log."""


def _pdeathsig() -> None:
    # Runs in the child between fork and exec. Errors are ignored: losing this only
    # means we fall back to stop()/atexit cleanup.
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A currently free loopback TCP port (the kernel's pick; racy but fine locally)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    args: Sequence[str], log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `args` with stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # PDEATHSIG fires when the *thread* that forked exits, so only use it from the
        # main thread; a worker thread may legitimately go away while we keep running.
        in_main = threading.current_thread() is threading.main_thread()
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_pdeathsig if in_main else None,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; always reaps the child."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until(
    name: str,
    check: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float = 60.0,
    interval: float = 0.1,
) -> None:
    """Poll `check` until true; fail fast if the process exits, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise StartupError(
                f"{name} exited with code {proc.returncode} during startup; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        try:
            if check():
                return
        except OSError:
            pass  # not listening yet / TLS not up yet
        if time.monotonic() > deadline:
            raise StartupError(
                f"{name} not ready after {timeout:.0f}s; last lines of {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(interval)
