"""The outbound-address guard (SSRF): where datamill may open connections on a user's behalf.

A host is resolved once; every address it resolves to must be public unless an
administrator allow-listed the host or a network containing the address
(``DATAMILL_OUTBOUND_ALLOW``). Callers connect to the returned address, not the name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from pydantic_core import PydanticCustomError

from datamill.domain.urls import check_http_url
from datamill.errors import DatamillError, E

OutboundTarget = tuple[str, int, str]
"""``(host, port, field)``: an address a connector opens, and the spec field naming it."""

_BLOCKED_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "::ffff:0:0/96",
    )
]


def _allowed_by_admin(
    host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: list[str]
) -> bool:
    for entry in allow:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _blocked(address.ipv4_mapped)
        if address in _NAT64:  # the IPv4 address a NAT64 gateway would reach
            return _blocked(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return any(address in net for net in _BLOCKED_NETWORKS)


def check_url(url: str, allow: list[str], field: str) -> str:
    """Check ``url`` by the spec URL rule (:func:`datamill.domain.urls.check_http_url`) and
    return the IP address to connect to."""
    try:
        check_http_url(url)
    except PydanticCustomError as exc:
        raise DatamillError(E.OUTBOUND_REFUSED, f"{field}: {exc.message()}", field=field) from None
    parts = urlsplit(url)
    return check_host(
        parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), allow, field
    )


def check_host(host: str, port: int, allow: list[str], field: str) -> str:
    """Resolve ``host`` once and refuse private, loopback, link-local and similar addresses;
    the first address to connect to."""
    return resolve_host(host, port, allow, field)[0]


def resolve_host(host: str, port: int, allow: list[str], field: str) -> list[str]:
    """Every address ``host`` resolves to, once all of them passed the guard (a client that
    resolves names itself is given these, so the address checked is the address used)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DatamillError(
            E.OUTBOUND_REFUSED, f"{field}: host '{host}' does not resolve", field=field
        ) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        if _blocked(address) and not _allowed_by_admin(host, address, allow):
            raise DatamillError(
                E.OUTBOUND_REFUSED,
                f"{field}: host '{host}' resolves to {address}, a private or loopback address; "
                "an administrator can allow it with DATAMILL_OUTBOUND_ALLOW",
                field=field,
            )
    return list(dict.fromkeys(str(a) for a in addresses))


def check_targets(targets: Iterable[OutboundTarget], allow: list[str]) -> None:
    """Refuse (E18118 naming the field) the first target :func:`check_host` refuses.

    This is how a save checks every address of a spec before anything is stored; the
    connectors check again when they connect, since names resolve anew and the allow list
    may change in between.
    """
    for host, port, field in targets:
        check_host(host, port, allow, field)
