"""The rule for URLs given in specs (data sources, exports, notifications, functions).

This checks the text only; where datamill may connect is decided when it connects, by the
outbound guard (:mod:`datamill.security.outbound`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from datamill.errors import DatamillError, E, field_error


def check_http_url(value: str, *, query: bool = True) -> str:
    """``value`` if it is an http(s) URL with a host, without credentials (they belong in a
    secret), fragment, spaces or control characters, and without a query unless ``query``.

    Raises ``PydanticCustomError`` E18011, for use in validators.
    """
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise field_error(
            E.INVALID_PARAMETER,
            "'{value}' must be an http(s) URL with a host",
            {"value": value[:200]},
        )
    if parts.username is not None or parts.password is not None:
        raise field_error(
            E.INVALID_PARAMETER, "credentials in the URL are not accepted; store them in a secret"
        )
    if not query and (parts.query or parts.fragment):
        raise field_error(E.INVALID_PARAMETER, "the URL may not have a query or a fragment")
    if parts.fragment or any(c.isspace() or ord(c) < 32 for c in value):
        raise field_error(E.INVALID_PARAMETER, "the URL may not have a fragment or spaces")
    try:
        _ = parts.port
    except ValueError:
        raise field_error(E.INVALID_PARAMETER, "the URL's port is not a number 0-65535") from None
    return value


def url_target(url: str, field: str, default_port: int | None = None) -> tuple[str, int, str]:
    """``(host, port, field)`` of a URL, the port defaulting to ``default_port`` or else by
    scheme (443 for https, 80 otherwise); a port that is not 0-65535 is refused (E18011)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise DatamillError(
            E.INVALID_PARAMETER, f"{field}: the port is not a number 0-65535", field=field
        ) from None
    default = default_port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port or default, field
