"""The egress policy (allowlist, address classes) and the SSRF-safe client against local
servers. Local servers are on loopback, which the production policy refuses: tests that
need to reach one pass a policy admitting exactly the loopback address they use, on top
of the production policy, so every other check stays the real one."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sba_core.tools.egress import (
    EgressDenied,
    IPAddress,
    host_allowed,
    parse_allowlist,
    public_only,
    validate_allowlist_entry,
    vet_destination,
)
from sba_devstack.certs import create_ca, issue_serving_cert
from sba_tools.egress import (
    EgressFailed,
    EgressRefused,
    SafeHttpClient,
    deployment_configured,
    parse_target,
)

# --- the address policy ---------------------------------------------------------------

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.8",
    "198.18.0.1",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",  # ULA
    "fe80::1",  # link-local
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "2001:db8::1",  # documentation
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
    "64:ff9b:1::1",  # local-use NAT64
]

ACCEPTED = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_public_only_refuses_non_public_addresses(address: str) -> None:
    assert public_only(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ACCEPTED)
def test_public_only_accepts_public_unicast(address: str) -> None:
    assert public_only(ipaddress.ip_address(address)) is None


def test_refusal_names_the_class_and_the_embedded_address() -> None:
    assert public_only(ipaddress.ip_address("169.254.169.254")) == "link-local"
    assert public_only(ipaddress.ip_address("::ffff:127.0.0.1")) == "loopback (embedded 127.0.0.1)"
    assert public_only(ipaddress.ip_address("100.64.1.1")) == "shared (CGNAT)"


def test_deployment_configured_policy_allows_in_cluster_but_never_metadata() -> None:
    assert deployment_configured(ipaddress.ip_address("10.96.0.10")) is None
    assert deployment_configured(ipaddress.ip_address("127.0.0.1")) is None
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "0.0.0.0", "ff02::1"):
        assert deployment_configured(ipaddress.ip_address(address)) is not None, address


# --- the allowlist --------------------------------------------------------------------


def test_allowlist_exact_and_wildcard_matching() -> None:
    allow = ["api.example.com", "*.docs.example.org", "203.0.113.7"]
    assert host_allowed("api.example.com", allow)
    assert host_allowed("API.Example.COM.", allow)
    assert not host_allowed("example.com", allow)
    assert not host_allowed("evil-api.example.com", allow)
    assert not host_allowed("api.example.com.evil.net", allow)
    assert host_allowed("v1.docs.example.org", allow)
    assert host_allowed("a.b.docs.example.org", allow)
    assert not host_allowed("docs.example.org", allow)  # the wildcard is below the apex
    assert not host_allowed("xdocs.example.org", allow)
    assert host_allowed("203.0.113.7", allow)
    assert not host_allowed("203.0.113.8", allow)
    assert not host_allowed("anything.example.net", [])


def test_wildcards_never_match_ip_literals_and_bad_entries_never_match() -> None:
    assert not host_allowed("10.0.0.1", ["*.0.0.1"])
    assert not host_allowed("example.com", ["*"])
    assert not host_allowed("example.com", ["http://example.com"])


def test_allowlist_idna() -> None:
    assert host_allowed("bücher.example", ["xn--bcher-kva.example"])
    assert validate_allowlist_entry("*.Bücher.example") == "*.xn--bcher-kva.example"


@pytest.mark.parametrize(
    "entry", ["*", "*.com", "http://example.com", "example.com:443", "example.com/x", "a@b.com", ""]
)
def test_invalid_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValueError, match=r"egress allowlist entry|wildcard entry"):
        validate_allowlist_entry(entry)


def test_parse_allowlist_normalises_and_deduplicates() -> None:
    assert parse_allowlist([" Example.com ", "example.com.", "", "*.x.example", "[::1]"]) == (
        "example.com",
        "*.x.example",
        "::1",
    )


# --- vetting a destination ------------------------------------------------------------


def _resolver(table: dict[str, list[str]]) -> Callable[[str], list[str]]:
    def resolve(host: str) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def test_vet_refuses_a_name_resolving_to_a_private_address() -> None:
    resolve = _resolver({"intranet.example.com": ["10.0.0.5"]})
    with pytest.raises(EgressDenied, match=r"10\.0\.0\.5.*private"):
        vet_destination("intranet.example.com", ["*.example.com"], resolver=resolve)


def test_vet_refuses_when_any_address_is_private() -> None:
    resolve = _resolver({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(EgressDenied, match="loopback"):
        vet_destination("mixed.example.com", ["mixed.example.com"], resolver=resolve)


def test_vet_checks_the_allowlist_before_resolving() -> None:
    calls: list[str] = []

    def resolve(host: str) -> list[str]:
        calls.append(host)
        return ["93.184.216.34"]

    with pytest.raises(EgressDenied, match="not on the tenant's egress allowlist"):
        vet_destination("other.example.com", ["api.example.com"], resolver=resolve)
    assert calls == []
    assert vet_destination("api.example.com", ["api.example.com"], resolver=resolve) == [
        ipaddress.ip_address("93.184.216.34")
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "::1"])
def test_vet_refuses_private_literals_even_when_allowlisted(host: str) -> None:
    with pytest.raises(EgressDenied):
        vet_destination(host, [host.strip("[]")], resolver=_resolver({}))


# --- the client against local servers ---------------------------------------------------


def loopback_too(*allowed: str) -> Callable[[IPAddress], str | None]:
    """Production policy, plus exactly the given loopback addresses (test servers)."""
    permitted = {ipaddress.ip_address(a) for a in allowed}

    def policy(address: IPAddress) -> str | None:
        return None if address in permitted else public_only(address)

    return policy


Route = Callable[[BaseHTTPRequestHandler], None]


class _Server:
    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                server_self.requests.append((self.command, self.path, dict(self.headers)))
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(status: int, body: bytes = b"", **headers: str) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def make(routes: dict[str, Route], host: str = "127.0.0.1") -> _Server:
        server = _Server(routes, host)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_default_client_refuses_loopback_without_connecting(serve: Any) -> None:
    server = serve({"/": _send(200, b"secret")})
    client = SafeHttpClient()
    with pytest.raises(EgressRefused, match="loopback"):
        client.request(
            "GET",
            f"http://127.0.0.1:{server.port}/",
            allowlist=["127.0.0.1"],
            max_bytes=100,
            timeout=5,
        )
    assert server.requests == []


def test_fetch_follows_redirects_and_keeps_the_host_header(serve: Any) -> None:
    final = serve({"/end": _send(200, b"<h1>done</h1>", Content_Type="text/html; charset=utf-8")})
    first = serve(
        {
            "/start": _send(302, Location="/middle"),
            "/middle": _send(301, Location=f"http://two.test:{final.port}/end"),
        }
    )
    resolve = _resolver({"one.test": ["127.0.0.1"], "two.test": ["127.0.0.1"]})
    client = SafeHttpClient(resolver=resolve, policy=loopback_too("127.0.0.1"))
    response = client.request(
        "GET",
        f"http://one.test:{first.port}/start",
        allowlist=["one.test", "two.test"],
        max_bytes=1000,
        timeout=5,
        max_redirects=3,
    )
    assert response.status == 200
    assert response.body == b"<h1>done</h1>"
    assert response.content_type == "text/html; charset=utf-8"
    assert response.url == f"http://two.test:{final.port}/end"
    assert response.redirects == [
        f"http://one.test:{first.port}/middle",
        f"http://two.test:{final.port}/end",
    ]
    assert [(m, p) for m, p, _ in first.requests] == [("GET", "/start"), ("GET", "/middle")]
    assert first.requests[0][2]["Host"] == f"one.test:{first.port}"
    assert final.requests[0][2]["Host"] == f"two.test:{final.port}"
    assert final.requests[0][2]["Accept-Encoding"] == "identity"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://internal.test/", "private"),
        ("http://[::1]/", "loopback"),
        ("http://elsewhere.test/", "not on the tenant's egress allowlist"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_every_redirect_hop_is_checked(serve: Any, location: str, reason: str) -> None:
    server = serve({"/": _send(302, Location=location)})
    resolve = _resolver(
        {"start.test": ["127.0.0.1"], "internal.test": ["10.0.0.7"], "elsewhere.test": ["1.1.1.1"]}
    )
    client = SafeHttpClient(resolver=resolve, policy=loopback_too("127.0.0.1"))
    allow = ["start.test", "internal.test", "169.254.169.254", "::1"]
    with pytest.raises(EgressRefused, match=reason):
        client.request(
            "GET",
            f"http://start.test:{server.port}/",
            allowlist=allow,
            max_bytes=100,
            timeout=5,
            max_redirects=3,
        )


def test_redirect_loops_stop_after_the_limit(serve: Any) -> None:
    server = serve({"/loop": _send(302, Location="/loop")})
    client = SafeHttpClient(
        resolver=_resolver({"loop.test": ["127.0.0.1"]}), policy=loopback_too("127.0.0.1")
    )
    with pytest.raises(EgressRefused, match="more than 3 redirects"):
        client.request(
            "GET",
            f"http://loop.test:{server.port}/loop",
            allowlist=["loop.test"],
            max_bytes=100,
            timeout=5,
            max_redirects=3,
        )
    assert len(server.requests) == 4


def test_posts_never_follow_redirects(serve: Any) -> None:
    server = serve({"/hook": _send(307, Location="http://169.254.169.254/")})
    client = SafeHttpClient(
        resolver=_resolver({"hook.test": ["127.0.0.1"]}), policy=loopback_too("127.0.0.1")
    )
    response = client.request(
        "POST",
        f"http://hook.test:{server.port}/hook",
        allowlist=["hook.test"],
        max_bytes=100,
        timeout=5,
        body=b"{}",
        max_redirects=3,
    )
    assert response.status == 307
    assert len(server.requests) == 1


def test_connection_is_pinned_to_the_vetted_address(serve: Any) -> None:
    """A resolver that answers differently the second time (DNS rebinding) is asked once
    per hop, and the connection goes to the address that was checked."""
    pinned = serve({"/": _send(200, b"from the vetted address")}, host="127.0.0.2")
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str) -> list[str]:
        calls.append(host)
        return next(answers)

    client = SafeHttpClient(resolver=rebinding, policy=loopback_too("127.0.0.2"))
    response = client.request(
        "GET",
        f"http://rebind.test:{pinned.port}/",
        allowlist=["rebind.test"],
        max_bytes=100,
        timeout=5,
    )
    assert response.body == b"from the vetted address"
    assert calls == ["rebind.test"]
    assert pinned.requests[0][2]["Host"] == f"rebind.test:{pinned.port}"


def test_rebinding_resolver_with_the_default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Public first, private after: the client connects to the public answer only."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    calls: list[str] = []
    connected: list[tuple[str, int]] = []

    def rebinding(host: str) -> list[str]:
        calls.append(host)
        return next(answers)

    def fake_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        raise ConnectionRefusedError("no network in unit tests")

    monkeypatch.setattr(socket, "create_connection", fake_connect)
    client = SafeHttpClient(resolver=rebinding)
    with pytest.raises(EgressFailed):
        client.request(
            "GET", "http://rebind.example/", allowlist=["rebind.example"], max_bytes=10, timeout=5
        )
    assert calls == ["rebind.example"]
    assert connected == [("93.184.216.34", 80)]

    # And when the first answer is already private, nothing is connected at all.
    connected.clear()
    client = SafeHttpClient(resolver=lambda host: ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(EgressRefused, match="private"):
        client.request(
            "GET", "http://rebind.example/", allowlist=["rebind.example"], max_bytes=10, timeout=5
        )
    assert connected == []


def test_body_is_capped(serve: Any) -> None:
    server = serve({"/big": _send(200, b"x" * 50_000, Content_Type="text/plain")})
    client = SafeHttpClient(
        resolver=_resolver({"big.test": ["127.0.0.1"]}), policy=loopback_too("127.0.0.1")
    )
    response = client.request(
        "GET",
        f"http://big.test:{server.port}/big",
        allowlist=["big.test"],
        max_bytes=1000,
        timeout=5,
    )
    assert response.truncated is True
    assert response.body == b"x" * 1000


def test_a_trickling_server_hits_the_deadline(serve: Any) -> None:
    stop = threading.Event()

    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        while not stop.is_set():
            try:
                h.wfile.write(b"x")
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    server = serve({"/slow": trickle})
    client = SafeHttpClient(
        resolver=_resolver({"slow.test": ["127.0.0.1"]}), policy=loopback_too("127.0.0.1")
    )
    try:
        with pytest.raises(EgressFailed, match="timed out"):
            client.request(
                "GET",
                f"http://slow.test:{server.port}/slow",
                allowlist=["slow.test"],
                max_bytes=1_000_000,
                timeout=0.5,
            )
    finally:
        stop.set()


def test_tls_uses_the_host_name_for_sni_and_the_certificate(tmp_path: Any) -> None:
    ca = create_ca("egress-test-ca")
    cert = issue_serving_cert(ca, "fetch.test", dns_names=("fetch.test",), ip_addresses=())
    cert.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    seen_sni: list[str | None] = []
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

    def remember_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        seen_sni.append(name)

    server_ctx.sni_callback = remember_sni
    server = _Server({"/": _send(200, b"secure")})
    server.httpd.socket = server_ctx.wrap_socket(server.httpd.socket, server_side=True)
    try:
        client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        resolve = _resolver({"fetch.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        client = SafeHttpClient(
            resolver=resolve, policy=loopback_too("127.0.0.1"), ssl_context=client_ctx
        )
        response = client.request(
            "GET",
            f"https://fetch.test:{server.port}/",
            allowlist=["fetch.test", "other.test"],
            max_bytes=100,
            timeout=5,
        )
        assert response.body == b"secure"
        assert seen_sni[-1] == "fetch.test"
        # Same address, another name: the certificate does not match, so no exchange.
        with pytest.raises(EgressRefused, match="certificate"):
            client.request(
                "GET",
                f"https://other.test:{server.port}/",
                allowlist=["fetch.test", "other.test"],
                max_bytes=100,
                timeout=5,
            )
        assert seen_sni[-1] == "other.test"
    finally:
        server.close()


def test_parse_target_refuses_odd_urls() -> None:
    for url in (
        "ftp://x.test/",
        "http:///nohost",
        "http://user:pw@x.test/",
        "http://x.test:99999/",
    ):
        with pytest.raises(EgressRefused):
            parse_target(url)
    target = parse_target("https://X.test/a?b=1#frag")
    assert (target.host, target.port, target.path, target.url) == (
        "x.test",
        443,
        "/a?b=1",
        "https://X.test/a?b=1",
    )
