"""Clients of S3-compatible object storage, shared by S3 data sources and S3 exports, and
how their errors read.

Every connection the client opens passes the outbound guard (:class:`S3Guard`): host names
are resolved by the guard, so the address checked is the address connected to (a DNS answer
that changes between check and connect cannot reach a refused address), and each socket's
address is checked again before it connects. The HTTP layer under s3fs (aiohttp, through
aiobotocore) follows redirects on its own, at most 10 hops; the guard sees every hop, so a
redirect to a refused address (loopback, private, ...) fails with E18118 before any
connection is made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError, first_line
from datamill.domain.datasources import S3Store
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_url, resolve_host

DEFAULT_REGION = "us-east-1"


class OutboundRefused(ConnectionRefusedError):
    """The guard refused a connection the S3 client was about to open; ``error`` is the
    refusal (E18118). An ``OSError``, so the HTTP layer gives up on that address cleanly."""

    def __init__(self, error: DatamillError) -> None:
        super().__init__(error.message)
        self.error = error


class S3Guard(AbstractResolver):
    """The outbound guard inside the S3 client's connection pool (aiohttp connector).

    As its resolver, it resolves host names through :func:`resolve_host` and hands out only
    the addresses that passed; as its socket factory, it checks the address of every
    socket before it connects (addresses written as IP literals, e.g. in a redirect's
    ``Location``, are never given to a resolver). A refusal raises :class:`OutboundRefused`
    and is kept in :attr:`refused` for callers that only learn that a read failed (DuckDB).
    """

    def __init__(self, allow: list[str], field: str) -> None:
        self.allow = list(allow)
        self.field = field
        self.refused: DatamillError | None = None
        self._approved: set[str] = set()

    def __repr__(self) -> str:  # part of fsspec's instance-cache key: no identity in it
        return f"S3Guard(allow={self.allow!r}, field={self.field!r})"

    def _refuse(self, error: DatamillError) -> OutboundRefused:
        self.refused = error
        return OutboundRefused(error)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await asyncio.to_thread(resolve_host, host, port, self.allow, self.field)
        except DatamillError as exc:
            raise self._refuse(exc) from None
        self._approved.update(addresses)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """A socket for ``addr_info`` (family, type, proto, name, address), once its
        address passed the guard."""
        family, type_, proto, _name, sockaddr = addr_info
        address, port = str(sockaddr[0]), int(sockaddr[1])
        if address not in self._approved:
            try:
                resolve_host(str(ipaddress.ip_address(address)), port, self.allow, self.field)
            except (DatamillError, ValueError) as exc:
                error = (
                    exc
                    if isinstance(exc, DatamillError)
                    else DatamillError(E.OUTBOUND_REFUSED, f"{self.field}: bad address {address}")
                )
                raise self._refuse(error) from None
        return socket.socket(family, type_, proto)


def outbound_refusal(exc: BaseException | None, fs: Any = None) -> DatamillError | None:
    """The guard's refusal (E18118) behind an S3 client error, if one is; with ``fs`` (an
    :func:`s3_filesystem`), also the last refusal its guard saw."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutboundRefused):
            return exc.error
        nested = getattr(exc, "kwargs", {}).get("error") if hasattr(exc, "kwargs") else None
        if isinstance(nested, BaseException) and id(nested) not in seen:
            found = outbound_refusal(nested)
            if found is not None:
                return found
        exc = exc.__cause__ or exc.__context__
    guard = getattr(fs, "outbound_guard", None)
    return guard.refused if isinstance(guard, S3Guard) else None


def s3_filesystem(
    *,
    endpoint: str | None,
    region: str | None,
    secret: str | None,
    secret_values: Mapping[str, str],
    outbound_allow: list[str],
) -> Any:
    """An ``s3fs`` file system for one endpoint and key pair (path-style addressing).

    ``endpoint`` (``spec.endpoint``; none: AWS) passes the outbound guard. A named
    ``secret`` (``spec.secret``) must hold ``accessKeyId`` and ``secretAccessKey``; without
    one the access is anonymous. Listings are never cached. Every connection passes the
    outbound guard (:class:`S3Guard`, kept as ``outbound_guard``).

    The instance comes from fsspec's own instance cache: the same endpoint and keys in the
    same process get the same file system back, so a long-lived worker reuses its HTTP
    client and connections instead of building them for every run (building a client
    reads botocore's S3 model, about 0.1 s). Threads share it safely (its calls run on
    fsspec's one IO loop); fsspec empties the cache in a forked child, and new keys (a
    changed secret) make a new instance.
    """
    import s3fs  # imported lazily: it pulls in aiobotocore

    client_kwargs: dict[str, Any] = {"region_name": region or DEFAULT_REGION}
    guard = S3Guard(outbound_allow, "spec.endpoint")
    if endpoint:
        check_url(endpoint, outbound_allow, "spec.endpoint")
        client_kwargs["endpoint_url"] = endpoint.rstrip("/")
    key = secret_values.get("accessKeyId")
    secret_key = secret_values.get("secretAccessKey")
    if secret and (not key or not secret_key):
        raise DatamillError(
            E.SECRET_KEY_MISSING,
            f"spec.secret: secret '{secret}' needs values accessKeyId and secretAccessKey",
            field="spec.secret",
        )
    fs = s3fs.S3FileSystem(
        key=key if secret else None,
        secret=secret_key if secret else None,
        anon=not secret,
        client_kwargs=client_kwargs,
        config_kwargs={
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 2},
            "connect_timeout": 5,
            "read_timeout": 60,
            "connector_args": {"resolver": guard, "socket_factory": guard.socket},
        },
        use_listings_cache=False,
    )
    if not isinstance(getattr(fs, "outbound_guard", None), S3Guard):  # a new instance
        fs.outbound_guard = fs.config_kwargs["connector_args"]["resolver"]
    return fs


def store_filesystem(
    store: S3Store, secret_values: Mapping[str, str], outbound_allow: list[str]
) -> Any:
    """The file system of an ``s3`` data source's or export's store (:func:`s3_filesystem`)."""
    return s3_filesystem(
        endpoint=store.endpoint,
        region=store.regionName,
        secret=store.secret,
        secret_values=secret_values,
        outbound_allow=outbound_allow,
    )


_S3_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientOSError",
    "FSTimeoutError",
    "IncompleteRead",
    "ResponseStreamingError",
}
_S3_TRANSIENT_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}


def s3_error(exc: BaseException, what: str) -> OutboundError:
    """The store's own error text; connection problems, timeouts and 5xx are transient."""
    transient = False
    code = ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError):
            transient = True
        if {c.__name__ for c in type(current).__mro__} & _S3_TRANSIENT_NAMES:
            transient = True
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            code = str(error.get("Code", "")) or code
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if isinstance(status, int) and status >= 500:
                transient = True
            if code in _S3_TRANSIENT_CODES:
                transient = True
        current = current.__cause__ or current.__context__
    text = f"{what}: {code + ': ' if code and code not in str(exc) else ''}{first_line(exc)}"
    return TransientOutboundError(text) if transient else OutboundError(text)
