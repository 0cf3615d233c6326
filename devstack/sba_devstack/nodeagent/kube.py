"""A thin, dict-in/dict-out Kubernetes REST client on top of the `kubernetes` package.

The package does kubeconfig loading, TLS and auth; we talk JSON documents directly so the
agent never depends on generated models and can send strategic-merge patches with
explicit nulls.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

Json = dict[str, Any]

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT = 30.0


class KubeError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `body` the decoded Status if any."""

    def __init__(self, status: int, reason: str, body: Json) -> None:
        self.status = status
        self.reason = body.get("reason") or reason
        self.body = body
        super().__init__(f"{status} {self.reason}: {body.get('message', '')}")


# Errors worth logging and retrying rather than crashing a loop over.
API_ERRORS: tuple[type[Exception], ...] = (KubeError, urllib3.exceptions.HTTPError, OSError)


class Kube:
    def __init__(self, api_client: Any) -> None:
        self._api = api_client
        self._host: str = api_client.configuration.host.rstrip("/")

    @classmethod
    def from_kubeconfig(cls, path: Path | None) -> Kube:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path) if path else None, client_configuration=configuration
        )
        return cls(k8s_client.ApiClient(configuration))

    @property
    def host(self) -> str:
        return self._host

    def ca_pem(self) -> bytes:
        """The CA bundle the client trusts (the kubeconfig's, written to a file by the
        kubernetes package)."""
        ca_file = self._api.configuration.ssl_ca_cert
        return Path(ca_file).read_bytes() if ca_file else b""

    def close(self) -> None:
        self._api.close()

    # -- plumbing --------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, str | int] | None) -> str:
        url = self._host + path
        if query:
            url += "?" + urllib.parse.urlencode({k: str(v) for k, v in query.items()})
        return url

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "sba-node-agent/v1.35.4"}
        if content_type:
            headers["Content-Type"] = content_type
        self._api.update_params_for_auth(headers, [], ["BearerToken"], "", "GET", None)
        return headers

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None,
        body: object,
        content_type: str | None,
        timeout: float | tuple[float, float],
    ) -> Any:
        ctype = content_type or ("application/json" if body is not None else None)
        return self._api.rest_client.request(
            method,
            self._url(path, query),
            headers=self._headers(ctype),
            body=body,
            _request_timeout=timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: object = None,
        content_type: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Json:
        resp = self._send(method, path, query, body, content_type, timeout)
        data: bytes = resp.read() or b"{}"
        try:
            decoded = json.loads(data)
        except ValueError:
            decoded = {"message": data[:500].decode(errors="replace")}
        if not 200 <= int(resp.status) < 300:
            raise KubeError(int(resp.status), str(resp.reason), decoded)
        result: Json = decoded
        return result

    def watch(
        self, path: str, query: Mapping[str, str | int], timeout_seconds: int
    ) -> Iterator[Json]:
        """Watch events (dicts with `type` and `object`) until the server ends the watch."""
        params: dict[str, str | int] = {
            **query,
            "watch": "true",
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true",
        }
        resp = self._send("GET", path, params, None, None, (10.0, timeout_seconds + 30.0))
        raw = resp.response
        try:
            if not 200 <= int(resp.status) < 300:
                data = raw.read()
                try:
                    body = json.loads(data)
                except ValueError:
                    body = {}
                raise KubeError(int(resp.status), str(resp.reason), body)
            buffer = b""
            for chunk in raw.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event: Json = json.loads(line)
                        yield event
        finally:
            raw.release_conn()

    # -- typed helpers ---------------------------------------------------------------

    def get(self, path: str) -> Json | None:
        try:
            return self.request("GET", path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise
