"""Exceptions of the Python client: the API's error model, and transport failures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from datamill.domain.runs import ExportRunEntry, HistoryEntry
    from datamill.domain.streaming import StreamingJob

__all__ = [
    "BadRequest",
    "Conflict",
    "DatamillAPIError",
    "DatamillClientError",
    "DatamillConnectionError",
    "DatamillProtocolError",
    "Forbidden",
    "InvalidName",
    "NotFound",
    "RunWaitTimeout",
    "ServerError",
    "StateWaitTimeout",
    "Unauthorized",
    "error_from_response",
]


class DatamillClientError(Exception):
    """Base of every exception the client raises on purpose."""


class DatamillAPIError(DatamillClientError):
    """The server answered with an error: ``{"error_code", "error_msg", "request_id"}``.

    ``status`` is the HTTP status; ``error_code`` the catalog code (``E18102`` ...; see
    ``docs/errors.md``), or ``HTTP<status>`` when the answer did not have the datamill error
    shape (a proxy in between, say); ``request_id`` is the id the server logged the request
    under (also its ``X-Request-ID`` header), or ``None`` when there was none.

    The subclass says the kind of failure: :class:`NotFound`, :class:`Conflict`,
    :class:`Unauthorized`, :class:`Forbidden`, :class:`BadRequest`, :class:`ServerError`.
    """

    def __init__(
        self, status: int, error_code: str, error_msg: str, request_id: str | None = None
    ) -> None:
        super().__init__(error_msg)
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.error_code}: {self.error_msg}"
        return f"{text} (request {self.request_id})" if self.request_id else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, error_code={self.error_code!r}, "
            f"error_msg={self.error_msg!r}, request_id={self.request_id!r})"
        )


class BadRequest(DatamillAPIError):
    """The request broke a rule (HTTP 400, 411, 413 or 415); the message names the field."""


class Unauthorized(DatamillAPIError):
    """The token is missing, unknown, revoked or expired (HTTP 401)."""


class Forbidden(DatamillAPIError):
    """The caller's role does not allow the operation (HTTP 403)."""


class NotFound(DatamillAPIError):
    """The project or resource does not exist, or is not visible to the caller (HTTP 404)."""


class Conflict(DatamillAPIError):
    """A conflict such as a name already in use, or removing the last owner (HTTP 409)."""


class ServerError(DatamillAPIError):
    """The server failed (HTTP 5xx); ``request_id`` finds the details in the server log."""


class DatamillConnectionError(DatamillClientError):
    """The server could not be reached (refused, unknown host, timeout, broken connection)."""


class DatamillProtocolError(DatamillClientError):
    """The server answered successfully with something the client cannot read."""


class InvalidName(DatamillClientError, ValueError):
    """A name the client refuses to put into a URL path (it contains ``/``)."""


class RunWaitTimeout(DatamillClientError, TimeoutError):
    """A run did not finish within the time :meth:`JobsAPI.wait` (or
    :meth:`ExportsAPI.wait`) was given.

    ``entry`` is the run's last history entry seen (``None`` if none was read); the run
    itself goes on.
    """

    def __init__(self, message: str, entry: HistoryEntry | ExportRunEntry | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class StateWaitTimeout(DatamillClientError, TimeoutError):
    """A streaming job did not reach the state :meth:`StreamingAPI.wait` waited for in time.

    ``job`` is the job as last read (``None`` if none was read); the job itself goes on.
    """

    def __init__(self, message: str, job: StreamingJob | None = None) -> None:
        super().__init__(message)
        self.job = job


_BY_STATUS: dict[int, type[DatamillAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    411: BadRequest,
    413: BadRequest,
    415: BadRequest,
}


def _error_class(status: int) -> type[DatamillAPIError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else DatamillAPIError


def error_from_response(response: httpx.Response) -> DatamillAPIError:
    """The exception for an error response, of the subclass its status selects."""
    status = response.status_code
    request_id = response.headers.get("x-request-id")
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if (
        isinstance(body, dict)
        and isinstance(body.get("error_code"), str)
        and isinstance(body.get("error_msg"), str)
    ):
        code, message = body["error_code"], body["error_msg"]
        if isinstance(body.get("request_id"), str):
            request_id = body["request_id"]
    else:
        code = f"HTTP{status}"
        text = response.text.strip().replace("\n", " ")
        reason = response.reason_phrase or "error"
        message = f"HTTP {status} {reason}" + (f": {text[:200]}" if text else "")
    return _error_class(status)(status, code, message, request_id)
