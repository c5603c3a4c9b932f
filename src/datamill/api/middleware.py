"""ASGI middleware: request ids, structured access logs and the request-body size limit."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datamill.errors import DatamillError, E
from datamill.services.streaming import NDJSON_TYPES

log = structlog.get_logger("datamill.access")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def error_body(error: E, message: str, request_id: str) -> dict[str, Any]:
    return {"error_code": error.code, "error_msg": message, "request_id": request_id}


def _check_url(scope: Scope) -> DatamillError | None:
    """Refuse NUL characters anywhere in the URL: no store can hold them in text."""
    raw = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string") or b"")
    if b"%00" in raw or b"\x00" in raw or "\x00" in str(scope.get("path", "")):
        return DatamillError(
            E.INVALID_PARAMETER, "the URL contains a NUL character (%00), which is not allowed"
        )
    return None


def _check_media_type(headers: dict[str, str], method: str) -> DatamillError | None:
    """Refuse a body that is neither JSON nor JSON lines with 415, before it is parsed.

    A body without a Content-Type is read as JSON, as before."""
    raw = headers.get("content-type")
    if method not in _BODY_METHODS or raw is None or headers.get("content-length") == "0":
        return None
    media = raw.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json") or media in NDJSON_TYPES:
        return None
    return DatamillError(
        E.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type '{media[:80]}' is not accepted; send application/json "
        "(or application/x-ndjson where an operation takes records)",
    )


class _BodyTooLarge(HTTPException):
    """Raised while the body is read: FastAPI passes an HTTP exception on untouched, where
    it turns any other error in reading the body into a 400."""


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``, reused when the caller sent a sane one),
    refuses bodies over the size limit with 413, and logs one line per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = 1
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        method = str(scope.get("method", ""))
        early = (
            self._check_length(headers, method)
            or _check_url(scope)
            or _check_media_type(headers, method)
        )
        if early is not None:
            await self._reject(send_with_id, early, request_id)
        else:
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise _BodyTooLarge(413, self._too_large().message)
                return message

            try:
                await self.app(scope, limited_receive, send_with_id)
            except _BodyTooLarge:
                await self._reject(send_with_id, self._too_large(), request_id)
            except Exception:  # a bug: answer 500 with the request id, log the trace
                log.exception("unhandled error", request_id=request_id)
                if status_holder.get("started"):
                    raise
                await self._reject(
                    send_with_id,
                    DatamillError(
                        E.INTERNAL,
                        "internal server error; the server log has the "
                        f"details under request id {request_id}",
                    ),
                    request_id,
                )
        log.info(
            "request",
            request_id=request_id,
            method=scope.get("method"),
            path=scope.get("path"),
            status=status_holder["status"],
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _too_large(self) -> DatamillError:
        return DatamillError(
            E.BODY_TOO_LARGE, f"request body exceeds the limit of {self.max_body_bytes} bytes"
        )

    def _check_length(self, headers: dict[str, str], method: str) -> DatamillError | None:
        raw = headers.get("content-length")
        if raw is None:
            if method in _BODY_METHODS and "transfer-encoding" not in headers:
                return DatamillError(
                    E.MISSING_CONTENT_LENGTH,
                    f"{method} needs a Content-Length header (or chunked transfer encoding)",
                )
            return None
        if not raw.isdigit():
            return DatamillError(
                E.INVALID_CONTENT_LENGTH, f"Content-Length '{raw[:32]}' is invalid"
            )
        if int(raw) > self.max_body_bytes:
            return self._too_large()
        return None

    @staticmethod
    async def _reject(send: Send, error: DatamillError, request_id: str) -> None:
        import json

        body = json.dumps(error_body(error.error, error.message, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
