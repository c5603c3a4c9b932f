"""Health (no token needed) and version."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from datamill import __version__
from datamill.api.deps import CurrentUser, RuntimeDep
from datamill.api.errors import ERROR_RESPONSES
from datamill.domain.common import Model

router = APIRouter(tags=["service"])


class Health(Model):
    status: str
    database: str


class Version(Model):
    version: str
    database: str


@router.get("/health", summary="Liveness and metadata-store health; needs no token")
def health(runtime: RuntimeDep) -> Health:
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception:
        database = "unavailable"
    return Health(status="ok" if database == "ok" else "degraded", database=database)


@router.get(
    "/version",
    summary="The server's version and metadata-store dialect",
    responses={401: ERROR_RESPONSES[401]},
)
def version(runtime: RuntimeDep, _user: CurrentUser) -> Version:
    return Version(version=__version__, database=runtime.engine.dialect.name)
