"""The FastAPI application: routers under ``/api/v1``, middleware, error handlers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from datamill import __version__
from datamill.api.errors import ERROR_RESPONSES, install_error_handlers
from datamill.api.middleware import RequestContextMiddleware
from datamill.api.routes import (
    batch,
    data_roots,
    datasources,
    engines,
    exports,
    health,
    jobs,
    projects,
    secrets,
    streaming,
    users,
    variables,
)
from datamill.config import Settings
from datamill.services.exports import export_types
from datamill.services.runtime import Runtime
from datamill.services.users import bootstrap_admin

API_PREFIX = "/api/v1"
log = structlog.get_logger("datamill")

DESCRIPTION = """
datamill registers data sources, runs batch SQL jobs and streaming pipelines over them, and
exports the results. Every operation except `GET /api/v1/health` needs a token, sent as
`Authorization: Bearer <token>` or `X-Auth-Token: <token>`. Errors are
`{"error_code", "error_msg", "request_id"}`; the codes are listed in docs/errors.md.
Text in a body, a path or a query may not contain a NUL character (`\\u0000`, `%00`):
such a request is refused with 400 E18011, whatever the field. Fields read strictly take
an integer as a JSON integer only (`8`, not `8.0`), a boolean as `true`/`false` only.
"""
NUL_NOTE = "No text in it may contain a NUL character (\\u0000): refused with 400 E18011."


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the application. A given ``runtime`` is used as is (tests share one)."""
    settings = settings or (runtime.settings if runtime else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime or Runtime.open(settings)
        token_file = bootstrap_admin(app.state.runtime)
        if token_file:
            log.info("admin user created", token_file=token_file)
        try:
            yield
        finally:
            watch = getattr(app.state, "run_watch", None)
            if watch is not None:
                watch.close()
                app.state.run_watch = None
            if owned:
                app.state.runtime.close()

    app = FastAPI(
        title="datamill",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(health.router, prefix=API_PREFIX)
    for module in (
        projects,
        users,
        data_roots,
        secrets,
        engines,
        datasources,
        variables,
        jobs,
        batch,
        exports,
        streaming,
    ):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its default 422 answers: datamill answers bad input with
    400 and the error model (documented on every route), never 422."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
            _note_nul(operation)
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    # export kinds are plug-ins: the domain model cannot list them, the registry can
    components["ExportCreate"]["properties"]["type"]["enum"] = export_types()
    app.openapi_schema = schema
    return schema


def _note_nul(operation: dict[str, Any]) -> None:
    """Say in the description of each text parameter and of the body that NUL is refused."""
    body = operation.get("requestBody")
    if body is not None:
        body["description"] = " ".join(filter(None, [body.get("description"), NUL_NOTE]))
    for parameter in operation.get("parameters", []):
        schema = json.dumps(parameter.get("schema", {}))
        if '"string"' in schema and '"enum"' not in schema:
            text = parameter.get("description") or parameter.get("schema", {}).get("description")
            text = (text or "").rstrip(".")
            parameter["description"] = f"{text}. {NUL_NOTE}" if text else NUL_NOTE
