"""An SSRF-safe HTTP client for tools that reach outside the cluster (stdlib only).

For every hop (the first request and each redirect it follows):

1. the URL must be absolute http(s) without credentials;
2. the host must be on the allowlist, and EVERY address it resolves to must pass the
   address policy (``sba_core.tools.egress``: public unicast only by default);
3. the connection goes to one of those vetted addresses — the name is never resolved a
   second time, so DNS rebinding cannot swap in another address — while the Host header,
   TLS SNI and certificate check use the host name;
4. redirects are followed by hand (GET only, at most ``max_redirects``), each one
   re-checked from step 1;
5. the body is read up to ``max_bytes`` and everything is bounded by one deadline: a
   watchdog shuts the socket down when it passes, however slowly the server trickles.

Proxy variables are ignored and no ``Accept-Encoding`` but identity is sent (no
decompression bombs). Failures are ``StepFailure``: a refused destination, a malformed
URL or too many redirects are permanent; timeouts and connection errors are retryable.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin, urlsplit

from sba_core.tools.egress import (
    AddressPolicy,
    EgressDenied,
    IPAddress,
    Resolver,
    public_only,
    vet_destination,
)
from sba_tools.errors import StepFailure, status_is_retryable

USER_AGENT: Final = "sba-tool/0.1 (+https://sba-agentic.io)"
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK: Final = 64 * 1024


class EgressRefused(StepFailure):
    """The destination is not allowed (allowlist or address policy). Never retried."""

    retryable = False


class EgressFailed(StepFailure):
    """The exchange failed on the network (connect, TLS, timeout): worth another attempt."""

    retryable = True


def system_resolver(host: str) -> list[str]:
    """Every address ``host`` resolves to, via the system resolver (A and AAAA)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def deployment_configured(address: IPAddress) -> str | None:
    """Address policy for endpoints the deployment itself configured (e.g. SBA_CRM_URL).

    In-cluster and private addresses are fine there, but never link-local (cloud
    metadata), multicast or unspecified ones.
    """
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return deployment_configured(address.ipv4_mapped)
    return None


@dataclass(frozen=True)
class HttpResponse:
    url: str
    """The URL that produced this response (after redirects)."""
    status: int
    headers: Mapping[str, str]
    """Lower-cased names; repeated headers joined with ', '."""
    body: bytes
    truncated: bool
    """More body was available than max_bytes."""
    redirects: list[str] = field(default_factory=list)
    """The URLs redirected to, in order."""
    content_type: str | None = None


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str


def parse_target(url: str) -> _Target:
    """Split an absolute http(s) URL; EgressRefused when it is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise EgressRefused(f"only http and https URLs may be fetched, not {url[:200]!r}")
    if not parts.hostname:
        raise EgressRefused(f"the URL {url[:200]!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("URLs carrying credentials are not allowed")
    try:
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"the URL {url[:200]!r} has an invalid port") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in "\r\n "):
        raise EgressRefused("the URL's path holds whitespace or control characters")
    default = 443 if parts.scheme == "https" else 80
    return _Target(
        url=parts._replace(fragment="").geturl(),
        scheme=parts.scheme,
        host=parts.hostname,
        port=port if port is not None else default,
        path=path,
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a vetted address; the host name is used for the Host header only."""

    def __init__(self, host: str, port: int, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """As above, then TLS with SNI and certificate verification against the host name."""

    def __init__(
        self,
        host: str,
        port: int,
        address: IPAddress,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, address, timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


class _Watchdog:
    """Shuts the armed socket down at the deadline, unblocking any read on it.

    Per-operation socket timeouts alone would let a server that trickles one byte per
    timeout keep a read going for ever.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def arm(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            fired = self.fired
        if fired:
            self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = self._sock
        self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket | None) -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class SafeHttpClient:
    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        policy: AddressPolicy = public_only,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._resolver = resolver
        self._policy = policy
        self._ssl_context = ssl_context
        self._user_agent = user_agent

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            return context
        return self._ssl_context

    def check(
        self, url: str, allowlist: Sequence[str] | None, *, policy: AddressPolicy | None = None
    ) -> list[IPAddress]:
        """Vet a URL's destination now (allowlist and addresses), without connecting."""
        target = parse_target(url)
        return self._vet(target, allowlist, policy or self._policy)

    def request(
        self,
        method: str,
        url: str,
        *,
        allowlist: Sequence[str] | None,
        max_bytes: int,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_redirects: int = 0,
        policy: AddressPolicy | None = None,
    ) -> HttpResponse:
        """One exchange. ``allowlist=None`` means a deployment-configured destination
        (no allowlist; pass a suitable ``policy``). Redirects are followed only for GET;
        otherwise a 3xx is returned as it is."""
        deadline = time.monotonic() + timeout
        policy = policy or self._policy
        redirects: list[str] = []
        current = url
        while True:
            target = parse_target(current)
            response = self._exchange(
                method, target, allowlist, policy, headers, body, max_bytes, deadline
            )
            location = response.headers.get("location")
            if (
                method != "GET"
                or max_redirects <= 0
                or response.status not in REDIRECT_STATUSES
                or not location
            ):
                return HttpResponse(
                    url=response.url,
                    status=response.status,
                    headers=response.headers,
                    body=response.body,
                    truncated=response.truncated,
                    redirects=redirects,
                    content_type=response.content_type,
                )
            if len(redirects) >= max_redirects:
                raise EgressRefused(
                    f"more than {max_redirects} redirects (last to {location[:200]!r})"
                )
            current = urljoin(target.url, location.strip())
            redirects.append(current)

    # -- one hop ------------------------------------------------------------------------

    def _vet(
        self, target: _Target, allowlist: Sequence[str] | None, policy: AddressPolicy
    ) -> list[IPAddress]:
        try:
            return vet_destination(target.host, allowlist, resolver=self._resolver, policy=policy)
        except EgressDenied as exc:
            raise EgressRefused(f"refused {target.url[:200]!r}: {exc}") from exc
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise EgressRefused(f"{target.host!r} does not resolve") from exc
            raise EgressFailed(f"resolving {target.host!r} failed: {exc}") from exc
        except OSError as exc:
            raise EgressFailed(f"resolving {target.host!r} failed: {exc}") from exc

    def _exchange(
        self,
        method: str,
        target: _Target,
        allowlist: Sequence[str] | None,
        policy: AddressPolicy,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        max_bytes: int,
        deadline: float,
    ) -> HttpResponse:
        addresses = self._vet(target, allowlist, policy)
        what = f"{method} {target.url[:200]!r}"
        last_error: OSError | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn = self._connection(target, address, remaining)
            try:
                with _Watchdog(remaining) as watchdog:
                    try:
                        conn.connect()
                        watchdog.arm(conn.sock)
                    except ssl.SSLCertVerificationError as exc:
                        raise EgressRefused(
                            f"the TLS certificate of {target.host!r} is not valid: "
                            f"{exc.verify_message}"
                        ) from exc
                    except OSError as exc:
                        last_error = exc  # could not connect: try the next vetted address
                        continue
                    try:
                        response = self._send(conn, method, target, headers, body, max_bytes)
                        if watchdog.fired:
                            raise TimeoutError("deadline passed")
                        return response
                    except (OSError, http.client.HTTPException) as exc:
                        if watchdog.fired or isinstance(exc, TimeoutError):
                            raise EgressFailed(f"{what} timed out") from exc
                        if isinstance(exc, OSError | ConnectionError):
                            raise EgressFailed(f"{what} failed: {exc}") from exc
                        raise EgressFailed(f"{what}: malformed response ({exc!r})") from exc
            finally:
                conn.close()
        if last_error is None or isinstance(last_error, TimeoutError):
            raise EgressFailed(f"{what} timed out")
        raise EgressFailed(f"{what} failed to connect: {last_error}")

    def _connection(
        self, target: _Target, address: IPAddress, timeout: float
    ) -> _PinnedHTTPConnection:
        if target.scheme == "https":
            return _PinnedHTTPSConnection(
                target.host, target.port, address, timeout, self._context()
            )
        return _PinnedHTTPConnection(target.host, target.port, address, timeout)

    def _send(
        self,
        conn: _PinnedHTTPConnection,
        method: str,
        target: _Target,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        max_bytes: int,
    ) -> HttpResponse:
        all_headers = {
            "User-Agent": self._user_agent,
            "Accept-Encoding": "identity",
            "Connection": "close",
            **(headers or {}),
        }
        conn.request(method, target.path, body=body, headers=all_headers)
        response = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        truncated = False
        if method != "HEAD":
            while True:
                chunk = response.read1(_READ_CHUNK)
                if not chunk:
                    break
                if size + len(chunk) > max_bytes:
                    chunks.append(chunk[: max_bytes - size])
                    size = max_bytes
                    truncated = True
                    break
                chunks.append(chunk)
                size += len(chunk)
            if not truncated and response.length:
                raise http.client.IncompleteRead(b"".join(chunks), response.length)
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return HttpResponse(
            url=target.url,
            status=response.status,
            headers=merged,
            body=b"".join(chunks),
            truncated=truncated,
            content_type=response.getheader("content-type"),
        )


def raise_for_status(what: str, response: HttpResponse) -> None:
    """Nothing for 2xx. 408, 429 and 5xx are retryable failures; anything else (a
    redirect that was not followed, any other 4xx) is permanent."""
    if 200 <= response.status < 300:
        return
    snippet = response.body[:200].decode("utf-8", "replace").strip()
    detail = f"{what} answered HTTP {response.status}" + (f": {snippet}" if snippet else "")
    if response.status in REDIRECT_STATUSES:
        detail += " (redirects are not followed here)"
    raise StepFailure(detail, retryable=status_is_retryable(response.status))
