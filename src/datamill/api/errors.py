"""Exception handlers: every failure becomes ``{"error_code", "error_msg", "request_id"}``."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from datamill.api.middleware import error_body
from datamill.domain.common import validation_failure
from datamill.errors import DatamillError, E

log = structlog.get_logger("datamill.api")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error_code: str
    error_msg: str
    request_id: str


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _respond(
    request: Request, error: DatamillError, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(error.error, error.message, _request_id(request)),
        status_code=error.status,
        headers=headers,
    )


_HTTP_STATUS_ERRORS = {
    404: E.ROUTE_NOT_FOUND,
    405: E.METHOD_NOT_ALLOWED,
    415: E.UNSUPPORTED_MEDIA_TYPE,
    413: E.BODY_TOO_LARGE,
}


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at ``path`` (routes may share a path)."""
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods.update(route.methods or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DatamillError)
    async def _datamill(request: Request, exc: DatamillError) -> JSONResponse:
        return _respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _respond(request, validation_failure(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return _respond(request, validation_failure(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = _HTTP_STATUS_ERRORS.get(exc.status_code, E.INVALID_PARAMETER)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {"Allow": ", ".join(_allowed_methods(app, request.url.path))}
        return _respond(request, DatamillError(error, message), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", request_id=_request_id(request))
        return _respond(
            request,
            DatamillError(
                E.INTERNAL,
                "internal server error; the server log has the details "
                f"under request id {_request_id(request)}",
            ),
        )


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "invalid input: the message names the field and the rule",
        401: "missing or bad token",
        403: "the caller's role does not allow this",
        404: "the project or resource does not exist",
        409: "a conflict, such as a name already in use",
        413: "request body too large",
    }.items()
}
