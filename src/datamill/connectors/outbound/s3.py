"""Clients of S3-compatible object storage, shared by S3 data sources and S3 exports, and
how their errors read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError, first_line
from datamill.domain.datasources import S3Store
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_url

DEFAULT_REGION = "us-east-1"


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
    one the access is anonymous. Listings are never cached.

    The instance comes from fsspec's own instance cache: the same endpoint and keys in the
    same process get the same file system back, so a long-lived worker reuses its HTTP
    client and connections instead of building them for every run (building a client
    reads botocore's S3 model, about 0.1 s). Threads share it safely (its calls run on
    fsspec's one IO loop); fsspec empties the cache in a forked child, and new keys (a
    changed secret) make a new instance.
    """
    import s3fs  # imported lazily: it pulls in aiobotocore

    client_kwargs: dict[str, Any] = {"region_name": region or DEFAULT_REGION}
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
    return s3fs.S3FileSystem(
        key=key if secret else None,
        secret=secret_key if secret else None,
        anon=not secret,
        client_kwargs=client_kwargs,
        config_kwargs={
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 2},
            "connect_timeout": 5,
            "read_timeout": 60,
        },
        use_listings_cache=False,
    )


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
