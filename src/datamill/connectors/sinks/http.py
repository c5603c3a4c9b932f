"""The ``http`` sink: POST a batch's rows to an HTTP endpoint, plus the outbound HTTP client
the other network sinks (``logdb``, ``tsdb``) share.

Formats (seed 004, 导出数据至 HTTP 地址):

* ``text`` (default, ``Content-Type: text/plain; charset=utf-8``): one line per row,
  ``Key1=Value1<TAB>Key2=Value2``. Null is the empty string, booleans are ``true`` /
  ``false``, dates are ISO 8601. A backslash, tab, newline or carriage return inside a
  value is written as ``\\\\``, ``\\t``, ``\\n``, ``\\r`` so a row always stays on one line.
* ``json`` (``Content-Type: application/json``): every request carries a JSON **array** of
  row objects (``[{"Key1": Value1, ...}, ...]``), at most ``batchSize`` rows each.

Every request of a batch carries ``X-Datamill-Batch`` (the batch time), ``X-Datamill-Part``
(``i/n``) and a deterministic ``Idempotency-Key`` (the same for the same part of the same
batch on every rerun). HTTP itself is not idempotent: rerunning an export sends the rows
again, and a receiver that wants exactly-once delivery must deduplicate on that key.

Outbound safety (DESIGN.md, "Security defaults"): the host is resolved once through
:func:`datamill.security.outbound.check_url`, which refuses private, loopback and link-local
addresses unless allow-listed, and the connection goes to the address it returned: the URL
holds the IP, the ``Host`` header holds the name and, for https, the TLS server name (SNI)
and certificate check use the name through httpx's ``sni_hostname`` request extension, so
verification stays on. Proxies from the environment are ignored and redirects are never
followed: a 3xx answer is an error.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import pyarrow as pa
from pydantic import BaseModel, Field, field_validator, model_validator

from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    TransientSinkError,
    register,
)
from datamill.domain.common import Model, Name
from datamill.domain.datasources import SchemaField
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_url

# --------------------------------------------------------------------------- shared helpers

CREDENTIAL_KEYS = frozenset(
    k.lower()
    for k in (
        "password",
        "passwd",
        "pwd",
        "token",
        "apiKey",
        "api_key",
        "accessKey",
        "accessKeyId",
        "secretKey",
        "secretAccessKey",
        "credentials",
        "username",
        "user",
        "auth",
        "authorization",
    )
)
"""Spec keys that would carry credentials in clear: refused with a pointer to ``secret``."""

REQUEST_ATTEMPTS = 3
"""Tries per request before a transient failure is given to the run's own retries."""
REQUEST_BACKOFF = 0.25
"""Seconds before the second try; doubled for each further one."""


class SinkSpec(Model):
    """Base of the network sinks' specs: refuses credentials given in clear.

    ``retries`` is read by the run machinery (export runs retried with backoff after a
    transient failure); it is declared here so the spec accepts it.
    """

    retries: int | None = Field(
        None, ge=0, le=10, description="automatic retries of a failed export run (default 3)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_in_clear(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in CREDENTIAL_KEYS:
                    # Raised as a DatamillError (not a pydantic error) so it names the key.
                    raise DatamillError(
                        E.INVALID_PARAMETER,
                        f"spec.{str(key)[:64]}: credentials are not accepted in the spec; "
                        "store them in a secret and name it in spec.secret",
                        field=f"spec.{str(key)[:64]}",
                    )
        return data


def check_mapping(mapping: Mapping[str, str], schema: list[SchemaField], where: str) -> None:
    """Every job field a mapping names must be in the job's output schema (E18111)."""
    known = {f.key for f in schema}
    for target, source in mapping.items():
        if source not in known:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"{where}.{target}: job field '{source[:128]}' does not exist in the job's "
                f"output ({', '.join(sorted(known)) or 'no fields'})",
                field=f"{where}.{target}",
            )


def check_fields(names: list[str], schema: list[SchemaField], where: str) -> None:
    known = {f.key for f in schema}
    for i, name in enumerate(names):
        if name not in known:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"{where}[{i}]: job field '{name[:128]}' does not exist in the job's output",
                field=f"{where}[{i}]",
            )


def check_http_url(value: str) -> str:
    """A spec URL: http(s), a host, no credentials, no query or fragment."""
    from pydantic_core import PydanticCustomError

    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise PydanticCustomError(
            "E18011", "'{value}' must be an http(s) URL with a host", {"value": value[:200]}
        )
    if parts.username is not None or parts.password is not None:
        raise PydanticCustomError(
            "E18011",
            "credentials in the URL are not accepted; store them in a secret (spec.secret)",
        )
    if parts.query or parts.fragment:
        raise PydanticCustomError("E18011", "the URL may not have a query or a fragment")
    try:
        _ = parts.port
    except ValueError:
        raise PydanticCustomError("E18011", "the URL's port is not a number 0-65535") from None
    return value.rstrip("/")


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value (of 4 characters or more) replaced by ``***``."""
    for value in secrets.values():
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def plain(value: Any) -> Any:
    """An Arrow/Python value as JSON can carry it (dates ISO 8601, decimals as floats).

    Raises :class:`ValueError` for values JSON cannot represent (NaN, infinities).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be represented in JSON")
        return value
    if isinstance(value, decimal.Decimal):
        return plain(float(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return str(value)


def row_chunks(table: pa.Table, size: int) -> Iterator[list[dict[str, Any]]]:
    """The table's rows as dicts, ``size`` at a time (never an empty chunk)."""
    pending: list[dict[str, Any]] = []
    for record_batch in table.to_batches(max_chunksize=size):
        pending.extend(record_batch.to_pylist())
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def batch_key(batch: ExportBatch) -> str:
    """The batch time as a stable text (UTC, ISO 8601) for ids and headers."""
    moment = batch.batch_time
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def statuses_text(statuses: Counter[int]) -> str:
    if not statuses:
        return "no responses"
    return ", ".join(f"{code} x{count}" for code, count in sorted(statuses.items()))


def _excerpt(response: httpx.Response, limit: int = 300) -> str:
    try:
        text = response.text
    except Exception:  # undecodable body
        text = repr(response.content[:limit])
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


class OutboundContext(Protocol):
    """What an outbound HTTP client needs from its caller's context (an export's
    :class:`ExportContext` or a stream connector's ``StreamContext``)."""

    outbound_allow: list[str]
    secret_values: Mapping[str, str]

    @property
    def log(self) -> Callable[[str], None]: ...


@dataclass(frozen=True)
class PinnedUrl:
    """A base URL whose host was resolved once and passed the outbound guard.

    ``base`` holds the IP address instead of the name; requests to it must carry ``host``
    as their ``Host`` header and ``extensions`` (the TLS server name, for https).
    ``shown`` is the URL as the user wrote it (for messages).
    """

    base: str
    shown: str
    host: str
    address: str
    extensions: dict[str, Any]


def pin_url(url: str, allow: list[str], field: str) -> PinnedUrl:
    """Resolve ``url``'s host once through the outbound guard (:func:`check_url`)."""
    parts = urlsplit(url)
    address = check_url(url, allow, field)
    host = parts.hostname or ""
    port = parts.port
    shown_host = f"[{host}]" if ":" in host else host
    ip_host = f"[{address}]" if ":" in address else address
    suffix = f":{port}" if port is not None else ""
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return PinnedUrl(
        base=urlunsplit((parts.scheme, ip_host + suffix, parts.path.rstrip("/"), parts.query, "")),
        shown=urlunsplit((parts.scheme, shown_host + suffix, parts.path, parts.query, "")),
        host=shown_host + suffix,
        address=address,
        extensions=extensions,
    )


class OutboundHttp:
    """An HTTP client for one base URL that connects only where the outbound guard allows.

    The base URL's host is resolved once (:func:`check_url`); requests go to that address
    with the original ``Host`` header and, for https, the original name for SNI and
    certificate verification. Redirects are errors; environment proxies are ignored.
    Transport errors, 5xx and 429 are retried :data:`REQUEST_ATTEMPTS` times with backoff
    and then raise :class:`TransientSinkError`; other 4xx and a certificate that does not
    verify raise :class:`SinkError` (with the status and an excerpt of the body).
    ``statuses`` counts every response code seen.
    """

    def __init__(
        self,
        base_url: str,
        ctx: OutboundContext,
        field: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        pinned = pin_url(urlunsplit((*parts[:3], "", "")), ctx.outbound_allow, field)
        self.shown = pinned.shown
        self._base = pinned.base
        self._host_header = pinned.host
        self._extensions: dict[str, Any] = dict(pinned.extensions)
        self.address = pinned.address
        self.ctx = ctx
        self.statuses: Counter[int] = Counter()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers=dict(headers or {}),
            auth=httpx.BasicAuth(*auth) if auth else None,
        )

    def __enter__(self) -> OutboundHttp:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request (``path`` relative to the base URL); statuses in ``ok`` that are
        4xx are returned to the caller instead of raising."""
        url = self._base + path
        shown = self.shown + path
        all_headers = {"Host": self._host_header, **(headers or {})}
        problem = ""
        for attempt in range(1, REQUEST_ATTEMPTS + 1):
            try:
                response = self._client.request(
                    method,
                    url,
                    content=content,
                    headers=all_headers,
                    params=params,
                    extensions=self._extensions,
                )
            except httpx.TransportError as exc:
                kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
                reason = redact(str(exc) or type(exc).__name__, self.ctx.secret_values)
                problem = f"{method} {shown} {kind}: {reason}"
                if _certificate_refused(exc):
                    raise SinkError(problem) from None  # a retry will not fix the certificate
            else:
                self.statuses[response.status_code] += 1
                status = response.status_code
                if status < 300 or status in ok:
                    return response
                if 300 <= status < 400:
                    location = response.headers.get("location", "")
                    raise SinkError(
                        f"{method} {shown} answered {status} (redirect to '{location[:200]}'); "
                        "redirects are not followed"
                    )
                body = redact(_excerpt(response), self.ctx.secret_values)
                problem = f"{method} {shown} answered {status}: {body}"
                if status != 429 and status < 500:
                    raise SinkError(problem)
            if attempt < REQUEST_ATTEMPTS:
                pause = REQUEST_BACKOFF * 2 ** (attempt - 1)
                self.ctx.log(f"{problem}; retrying in {pause:g} s")
                time.sleep(pause)
        raise TransientSinkError(f"{problem} (after {REQUEST_ATTEMPTS} tries)")


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a transport error is a TLS certificate (or hostname) verification failure."""
    seen: BaseException | None = exc
    for _depth in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def secret_value(
    ctx: OutboundContext, secret: str | None, key: str, *, required: bool = True
) -> str | None:
    """One value of the spec's secret; a missing required one is E18503."""
    if secret is None:
        return None
    value = ctx.secret_values.get(key)
    if value is None and required:
        raise DatamillError(
            E.SECRET_KEY_MISSING,
            f"spec.secret: secret '{secret}' has no value '{key}'",
            field="spec.secret",
        )
    return value


def basic_auth(ctx: OutboundContext, secret: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from the secret, for basic authentication."""
    if secret is None:
        return None
    username = secret_value(ctx, secret, "username")
    password = secret_value(ctx, secret, "password")
    return username or "", password or ""


# --------------------------------------------------------------------------- the http sink

_HOST_RULE = re.compile(r"^(https?://)?[A-Za-z0-9._\-\[\]:]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
_FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "x-datamill-batch",
        "x-datamill-part",
    }
)


class HttpSpec(SinkSpec):
    host: str = Field(
        min_length=1,
        max_length=512,
        description="server address: https://example.com, 127.0.0.1:7758 (default http)",
    )
    uri: str = Field("/", max_length=2048, description="request path, e.g. /test/repos")
    format: Literal["text", "json"] = "text"
    batchSize: int = Field(1000, ge=1, le=100_000, description="rows per request")
    timeoutSeconds: float = Field(30, gt=0, le=600)
    headers: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="extra, non-secret request headers"
    )
    secret: Name | None = Field(
        None, description="a secret whose value 'token' is sent as Authorization: Bearer"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        value = value.strip().rstrip("/")
        if not _HOST_RULE.fullmatch(value):
            raise PydanticCustomError(
                "E18011",
                "'{value}' must be a host, host:port or http(s)://host[:port] without a path",
                {"value": value[:200]},
            )
        check_http_url(value if "://" in value else "http://" + value)
        return value

    @property
    def base_url(self) -> str:
        """``host`` as a URL (http when no scheme is given)."""
        return self.host if "://" in self.host else "http://" + self.host

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        if not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value):
            raise PydanticCustomError(
                "E18011", "the path must start with / and contain no spaces or control characters"
            )
        if "#" in value:
            raise PydanticCustomError("E18011", "the path may not have a fragment")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        from pydantic_core import PydanticCustomError

        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise PydanticCustomError(
                    "E18011", "invalid header name '{name}'", {"name": name[:64]}
                )
            if name.lower() in _FORBIDDEN_HEADERS:
                raise PydanticCustomError(
                    "E18011",
                    "header '{name}' cannot be set here (credentials go in spec.secret; "
                    "the rest is set by datamill)",
                    {"name": name[:64]},
                )
            if len(text) > 4096 or any(ord(c) < 32 and c != "\t" for c in text):
                raise PydanticCustomError(
                    "E18011",
                    "header '{name}': value too long or has control characters",
                    {"name": name[:64]},
                )
        return value


def _text_value(value: Any) -> str:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def encode_text(rows: list[dict[str, Any]]) -> bytes:
    lines = ["\t".join(f"{k}={_text_value(v)}" for k, v in row.items()) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def encode_json(rows: list[dict[str, Any]]) -> bytes:
    data = [{k: plain(v) for k, v in row.items()} for row in rows]
    return json.dumps(data, ensure_ascii=False, allow_nan=False).encode()


class HttpSink:
    """POST the rows, ``batchSize`` per request, in ``text`` or ``json`` (module docstring)."""

    type_name: ClassVar[str] = "http"
    spec_model: ClassVar[type[BaseModel]] = HttpSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, HttpSpec)  # every job field is sent: nothing to map

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, HttpSpec)
        return spec.secret

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, HttpSpec)
        token = secret_value(ctx, spec.secret, "token")
        headers = dict(spec.headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        table = batch.read()
        if table.num_rows == 0:
            return ExportOutcome(rows=0, bytes=0, detail="the batch has no rows: nothing sent")
        parts = math.ceil(table.num_rows / spec.batchSize)
        content_type = "application/json" if spec.format == "json" else "text/plain; charset=utf-8"
        stamp = batch_key(batch)
        sent_rows = sent_bytes = 0
        with OutboundHttp(spec.base_url, ctx, "spec.host", spec.timeoutSeconds, headers) as client:
            for index, rows in enumerate(row_chunks(table, spec.batchSize), start=1):
                try:
                    body = encode_json(rows) if spec.format == "json" else encode_text(rows)
                except ValueError as exc:
                    raise SinkError(f"rows {sent_rows + 1}-{sent_rows + len(rows)}: {exc}") from exc
                key = hashlib.sha256(
                    f"{batch.project}/{batch.job}/{batch.export}/{stamp}/{index}".encode()
                ).hexdigest()[:40]
                client.request(
                    "POST",
                    spec.uri,
                    content=body,
                    headers={
                        "Content-Type": content_type,
                        "Idempotency-Key": key,
                        "X-Datamill-Batch": stamp,
                        "X-Datamill-Part": f"{index}/{parts}",
                    },
                )
                sent_rows += len(rows)
                sent_bytes += len(body)
            detail = (
                f"sent {sent_rows} rows in {parts} requests ({spec.format}) to "
                f"{client.shown}{spec.uri}; responses: {statuses_text(client.statuses)}"
            )
        ctx.log(detail)
        return ExportOutcome(rows=sent_rows, bytes=sent_bytes, detail=detail)


register(HttpSink())
