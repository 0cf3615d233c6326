"""Non-blocking HTTP to the Kubernetes REST API, on aiohttp.

Connection details come from a `kubernetes.client.Configuration` (what `build_api_client`
loads from a kubeconfig or the in-cluster service account): the host, the CA bundle, a
client certificate, `verify_ssl`, `tls_server_name`, an HTTP proxy, and the
Authorization header from `get_api_key_with_prefix("authorization")`, which also runs
the configuration's token refresh hook (the in-cluster token file, expiring kubeconfig
tokens).

Every request has a total timeout (connecting, waiting for a pooled connection, sending,
reading the answer) and the connection pool is bounded, so a slow API server yields
`KubeUnreachable` instead of piling up work. An error status from the API server is a
`KubeStatusError` carrying its `Status` object; `sba_api.kube` turns both into the API's
errors.
"""

from __future__ import annotations

import datetime
import json
import ssl
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 64
JSON: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
USER_AGENT: Final = "sba-api"


class KubeStatusError(Exception):
    """The API server answered with an error status; `body` is its Status object ({} if
    the answer was not one)."""

    def __init__(self, status: int, reason: str, body: dict[str, Any]) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.message = str(body.get("message") or reason or "")
        super().__init__(f"{status} {reason}: {self.message}")

    @property
    def details(self) -> dict[str, Any]:
        details = self.body.get("details")
        return details if isinstance(details, dict) else {}


class KubeUnreachable(Exception):
    """No answer: refused, reset, a TLS failure, or nothing within the timeout."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _segment(value: str) -> str:
    return quote(value, safe="")


def custom_path(
    group: str, version: str, plural: str, *, namespace: str | None = None, name: str = ""
) -> str:
    """The path of a custom resource collection, or of one object when `name` is given."""
    path = f"/apis/{_segment(group)}/{_segment(version)}"
    if namespace is not None:
        path += f"/namespaces/{_segment(namespace)}"
    path += f"/{_segment(plural)}"
    return path + (f"/{_segment(name)}" if name else "")


def core_path(resource: str, *, namespace: str | None = None, name: str = "") -> str:
    """The path of a core (v1) resource: `core_path("secrets", namespace="a", name="b")`."""
    path = "/api/v1"
    if namespace is not None:
        path += f"/namespaces/{_segment(namespace)}"
    path += f"/{_segment(resource)}"
    return path + (f"/{_segment(name)}" if name else "")


def ssl_context(configuration: Any) -> ssl.SSLContext:
    """The TLS settings the `kubernetes` client would use, as an SSLContext."""
    ctx = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert or None,
        cadata=getattr(configuration, "ca_cert_data", None) or None,
    )
    if configuration.cert_file:
        ctx.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif getattr(configuration, "assert_hostname", None) is False:
        ctx.check_hostname = False
    return ctx


def _proxy(configuration: Any) -> str | None:
    proxy = getattr(configuration, "proxy", None)
    if not proxy:
        return None
    if not str(proxy).startswith(("http://", "https://")):
        raise ValueError(f"only HTTP(S) proxies are supported for Kubernetes, not {proxy!r}")
    host = (urlsplit(str(configuration.host)).hostname or "").lower()
    for entry in str(getattr(configuration, "no_proxy", None) or "").lower().split(","):
        entry = entry.strip().lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return str(proxy)


def _json_default(value: object) -> str:
    # What the `kubernetes` client's serializer did with timestamps in a body.
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _status_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:500].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {}


class KubeHttp:
    """One aiohttp session to the API server named by a `kubernetes` Configuration.

    The session is made on first use, inside the running loop; `close()` ends it.
    """

    def __init__(
        self,
        configuration: Any,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._configuration = configuration
        self._base = str(configuration.host).rstrip("/")
        self._ssl: ssl.SSLContext | None = (
            ssl_context(configuration) if self._base.startswith("https:") else None
        )
        self._server_hostname: str | None = getattr(configuration, "tls_server_name", None)
        self._proxy = _proxy(configuration)
        self._proxy_headers = getattr(configuration, "proxy_headers", None)
        self._timeout_seconds = timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                ssl=self._ssl if self._ssl is not None else False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"Accept": JSON, "User-Agent": USER_AGENT},
                raise_for_status=False,
                trust_env=False,
            )
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        authorization = self._configuration.get_api_key_with_prefix("authorization")
        if authorization:
            headers["Authorization"] = str(authorization)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """The decoded JSON answer to `method path` (with `body` as JSON, when given).

        An error status raises `KubeStatusError`; no answer, `KubeUnreachable`.
        """
        data = None if body is None else json.dumps(body, default=_json_default).encode()
        headers = self._headers(content_type if data is not None else None)
        try:
            async with self._session_now().request(
                method,
                self._base + path,
                data=data,
                headers=headers,
                server_hostname=self._server_hostname,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
            ) as response:
                raw = await response.read()
                status, reason = response.status, response.reason or ""
        except TimeoutError as exc:
            raise KubeUnreachable(
                f"no answer within {self._timeout_seconds:g}s", timed_out=True
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeUnreachable(f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise KubeStatusError(status, reason, _status_body(raw))
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise KubeStatusError(status, "the answer is not JSON", {}) from exc
        if not isinstance(answer, dict):
            raise KubeStatusError(status, "the answer is not a JSON object", {})
        return answer

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
