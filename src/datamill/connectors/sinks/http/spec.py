"""The ``http`` export's spec."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from datamill.connectors.sinks.common import SinkSpec
from datamill.domain.common import Name
from datamill.domain.urls import check_http_url
from datamill.errors import E, field_error

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

        value = value.strip().rstrip("/")
        if not _HOST_RULE.fullmatch(value):
            raise field_error(
                E.INVALID_PARAMETER,
                "'{value}' must be a host, host:port or http(s)://host[:port] without a path",
                {"value": value[:200]},
            )
        check_http_url(value if "://" in value else "http://" + value, query=False)
        return value

    @property
    def base_url(self) -> str:
        """``host`` as a URL (http when no scheme is given)."""
        return self.host if "://" in self.host else "http://" + self.host

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:

        if not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value):
            raise field_error(
                E.INVALID_PARAMETER,
                "the path must start with / and contain no spaces or control characters",
            )
        if "#" in value:
            raise field_error(E.INVALID_PARAMETER, "the path may not have a fragment")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:

        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise field_error(
                    E.INVALID_PARAMETER, "invalid header name '{name}'", {"name": name[:64]}
                )
            if name.lower() in _FORBIDDEN_HEADERS:
                raise field_error(
                    E.INVALID_PARAMETER,
                    "header '{name}' cannot be set here (credentials go in spec.secret; "
                    "the rest is set by datamill)",
                    {"name": name[:64]},
                )
            if len(text) > 4096 or any(ord(c) < 32 and c != "\t" for c in text):
                raise field_error(
                    E.INVALID_PARAMETER,
                    "header '{name}': value too long or has control characters",
                    {"name": name[:64]},
                )
        return value
