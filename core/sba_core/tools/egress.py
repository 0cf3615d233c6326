"""Egress policy for tools that reach hosts outside the cluster (pure: no I/O here).

Two independent checks decide whether a tool pod may connect somewhere:

1. the **allowlist**: the host must be named by the tenant's ``egressAllowlist`` — an exact
   host (``api.example.com``, or an IP literal) or a wildcard ``*.example.com``, which
   matches any name *below* ``example.com`` but not ``example.com`` itself;
2. the **address policy**: every address the host resolves to must be acceptable. The
   production policy, :func:`public_only`, refuses anything that is not a public unicast
   address: loopback, RFC 1918, link-local (cloud metadata at 169.254.169.254), CGNAT
   100.64/10, multicast, reserved, unspecified, IPv6 ULA/link-local, and the IPv4 forms
   hidden inside IPv6 (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64).

:func:`vet_destination` applies both with an injected resolver and returns the addresses to
connect to; the caller must connect to one of *those* (never resolve again) so a DNS answer
that changes between the check and the connection (rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

AddressPolicy: TypeAlias = Callable[[IPAddress], str | None]
"""Returns why an address is refused, or None when it is acceptable."""

Resolver: TypeAlias = Callable[[str], Sequence[str]]
"""Host name → the IP addresses (as text) it resolves to. May raise OSError."""

MAX_ALLOWLIST_ENTRIES: Final = 256
_LABEL: Final = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
# Special-purpose IPv4 ranges some Python versions still call global.
_IPV4_SPECIAL: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "240.0.0.0/4")
)
_NAT64_WELL_KNOWN: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")


class EgressDenied(ValueError):
    """The destination is not allowed. Permanent: retrying cannot change the answer."""


# --- hosts and the allowlist ----------------------------------------------------------


def ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal (brackets allowed), else None."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form without a trailing dot; IP literals in canonical form.

    Raises EgressDenied for anything that is not a plausible host name.
    """
    text = host.strip()
    literal = ip_literal(text)
    if literal is not None:
        if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
            raise EgressDenied(f"scoped IPv6 address {host!r} is not allowed")
        return str(literal)
    text = text.rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise EgressDenied(f"invalid host name {host!r}") from exc
    labels = text.split(".")
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise EgressDenied(f"invalid host name {host!r}")
    return text


def validate_allowlist_entry(entry: str) -> str:
    """An allowlist entry in normal form; ValueError when it is not one.

    Accepted: ``host.example.com``, ``*.example.com`` (at least two labels after the
    star), an IPv4 or IPv6 literal. Not accepted: schemes, ports, paths, a bare ``*``.
    """
    text = entry.strip()
    wildcard = text.startswith("*.")
    body = text[2:] if wildcard else text
    if not body or (any(c in body for c in "/:@?#*") and ip_literal(body) is None):
        raise ValueError(f"egress allowlist entry {entry!r} must be a host or *.domain")
    try:
        host = normalize_host(body)
    except EgressDenied as exc:
        raise ValueError(f"egress allowlist entry {entry!r} is not a valid host") from exc
    if wildcard:
        if ip_literal(host) is not None or "." not in host:
            raise ValueError(f"wildcard entry {entry!r} must name a domain like *.example.com")
        return f"*.{host}"
    return host


def parse_allowlist(entries: Iterable[str]) -> tuple[str, ...]:
    """Validated, normalised, de-duplicated entries (order kept); ValueError on a bad one."""
    seen: dict[str, None] = {}
    for entry in entries:
        if entry.strip():
            seen[validate_allowlist_entry(entry)] = None
    if len(seen) > MAX_ALLOWLIST_ENTRIES:
        raise ValueError(f"an egress allowlist holds at most {MAX_ALLOWLIST_ENTRIES} entries")
    return tuple(seen)


def host_allowed(host: str, allowlist: Iterable[str]) -> bool:
    """Whether ``host`` is named by the allowlist. Malformed entries never match."""
    try:
        name = normalize_host(host)
    except EgressDenied:
        return False
    is_ip = ip_literal(name) is not None
    for raw in allowlist:
        try:
            entry = validate_allowlist_entry(raw)
        except ValueError:
            continue
        if entry == name:
            return True
        if not is_ip and entry.startswith("*.") and name.endswith(entry[1:]):
            return True
    return False


# --- addresses ------------------------------------------------------------------------


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and that a network may route to."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64_WELL_KNOWN or (
        address in _IPV4_COMPATIBLE and int(address) > 1  # not :: or ::1
    ):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _classify(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT)"
    if isinstance(address, ipaddress.IPv4Address) and any(address in n for n in _IPV4_SPECIAL):
        return "special-purpose"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-global"
    return None


def public_only(address: IPAddress) -> str | None:
    """The production address policy: only public unicast addresses are acceptable."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "scoped"
        if address in _NAT64_LOCAL:
            return "local NAT64"
        if address.teredo is not None:
            return "Teredo tunnel"
        embedded = embedded_ipv4(address)
        for inner in embedded:
            reason = _classify(inner)
            if reason is not None:
                return f"{reason} (embedded {inner})"
        if address.ipv4_mapped is not None or address in _NAT64_WELL_KNOWN:
            # The packets go to the embedded IPv4 address, which is public.
            return None
    return _classify(address)


def vet_destination(
    host: str,
    allowlist: Iterable[str] | None,
    *,
    resolver: Resolver,
    policy: AddressPolicy = public_only,
) -> list[IPAddress]:
    """The addresses a connection to ``host`` may use; EgressDenied when there are none.

    ``allowlist=None`` skips the allowlist (for destinations the deployment itself
    configured); the address policy always applies. ALL resolved addresses must pass:
    refusing only the bad ones would let a resolver mix a private address in.
    """
    name = normalize_host(host)
    if allowlist is not None and not host_allowed(name, allowlist):
        raise EgressDenied(f"host {name!r} is not on the tenant's egress allowlist")
    literal = ip_literal(name)
    texts: Sequence[str] = [str(literal)] if literal is not None else resolver(name)
    addresses: list[IPAddress] = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise EgressDenied(f"{name!r} resolved to a malformed address {text!r}") from exc
        reason = policy(address)
        if reason is not None:
            shown = name if literal is not None else f"{name!r} resolves to {address}, which"
            raise EgressDenied(f"{shown} is a {reason} address; refusing to connect")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressDenied(f"{name!r} did not resolve to any address")
    return addresses
