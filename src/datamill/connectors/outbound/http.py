"""Guarded outbound HTTP: one client for every call datamill makes on a user's behalf
(exports, webhooks, notifications, function calls, WebHDFS).

Outbound safety (DESIGN.md, "Security defaults"): the host is resolved once through
:func:`datamill.security.outbound.check_url`, which refuses private, loopback and link-local
addresses unless allow-listed, and the connection goes to the address it returned: the URL
holds the IP, the ``Host`` header holds the name and, for https, the TLS server name (SNI)
and certificate check use the name through httpx's ``sni_hostname`` request extension, so
verification stays on. Proxies from the environment are ignored and redirects are never
followed: a 3xx answer is an error.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_url

REQUEST_ATTEMPTS = 3
"""Tries per request before a transient failure is given to the run's own retries."""
REQUEST_BACKOFF = 0.25
"""Seconds before the second try; doubled for each further one."""


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value (of 4 characters or more) replaced by ``***``."""
    for value in secrets.values():
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


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
    and then raise :class:`TransientOutboundError`; other 4xx and a certificate that does not
    verify raise :class:`OutboundError` (with the status and an excerpt of the body).
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
                    raise OutboundError(problem) from None  # a retry will not fix the certificate
            else:
                self.statuses[response.status_code] += 1
                status = response.status_code
                if status < 300 or status in ok:
                    return response
                if 300 <= status < 400:
                    location = response.headers.get("location", "")
                    raise OutboundError(
                        f"{method} {shown} answered {status} (redirect to '{location[:200]}'); "
                        "redirects are not followed"
                    )
                body = redact(_excerpt(response), self.ctx.secret_values)
                problem = f"{method} {shown} answered {status}: {body}"
                if status != 429 and status < 500:
                    raise OutboundError(problem)
            if attempt < REQUEST_ATTEMPTS:
                pause = REQUEST_BACKOFF * 2 ** (attempt - 1)
                self.ctx.log(f"{problem}; retrying in {pause:g} s")
                time.sleep(pause)
        raise TransientOutboundError(f"{problem} (after {REQUEST_ATTEMPTS} tries)")


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
