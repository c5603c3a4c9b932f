"""Engine connections: where a project's jobs reach a remote engine (a Spark Connect server)."""

from __future__ import annotations

from fastapi import APIRouter, status

from datamill.api.deps import (
    PageDep,
    ProjectEditor,
    ProjectReader,
    ResourceName,
    RuntimeDep,
    SessionDep,
)
from datamill.domain.common import Model
from datamill.domain.engines import EngineConnection, EngineConnectionPut
from datamill.services import engine_connections as service

router = APIRouter(tags=["engines"])
BASE = "/projects/{project}/engines"


class EngineConnectionList(Model):
    total: int
    page: int
    size: int
    engines: list[EngineConnection]


@router.post(
    BASE + "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create an engine connection (a Spark Connect server jobs may name as engine)",
)
def create_engine(
    name: ResourceName,
    body: EngineConnectionPut,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> EngineConnection:
    return service.create_connection(runtime, session, access, name, body)


@router.put(BASE + "/{name}", summary="Replace an engine connection")
def update_engine(
    name: ResourceName,
    body: EngineConnectionPut,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> EngineConnection:
    return service.update_connection(runtime, session, access, name, body)


@router.get(BASE + "/{name}", summary="Get an engine connection")
def get_engine(name: ResourceName, session: SessionDep, access: ProjectReader) -> EngineConnection:
    return service.get_connection(session, access, name)


@router.get(BASE, summary="List the project's engine connections")
def list_engines(session: SessionDep, access: ProjectReader, page: PageDep) -> EngineConnectionList:
    result = service.list_connections(session, access, page)
    return EngineConnectionList(
        total=result.total, page=result.page, size=result.size, engines=result.items
    )


@router.delete(
    BASE + "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an engine connection no job uses",
)
def delete_engine(name: ResourceName, session: SessionDep, access: ProjectEditor) -> None:
    service.delete_connection(session, access, name)
