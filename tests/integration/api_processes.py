"""Real `sba-agentic api` processes for the security and contract tests.

Each call starts one process with the given extra environment against the
session's Postgres (as sba_app), Redis and control plane.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sba_devstack.procs import free_port
from sba_devstack.services import Service, http_ok


def start_api(env: Mapping[str, str], logs: Path, name: str = "api") -> tuple[Service, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full = {
        **env,
        "SBA_API_HOST": "127.0.0.1",
        "SBA_API_PORT": str(port),
        "SBA_PUBLIC_URL": url,
        "SBA_GATEWAY_URL": url,
    }
    service = Service("api", full, logs / f"{name}.log", ready=http_ok(f"{url}/readyz"))
    return service.start(), url


class JwksServer:
    """A local OIDC-style JWKS endpoint whose key set tests can change."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
