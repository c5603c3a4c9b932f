"""Data sources of the batch catalog, schema inference and preview."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from datamill.api.deps import (
    PageDep,
    ProjectEditor,
    ProjectReader,
    ResourceName,
    RuntimeDep,
    SessionDep,
)
from datamill.domain.common import BatchTime, Model
from datamill.domain.datasources import (
    DataSource,
    DataSourceCreate,
    DataSourceSort,
    DataSourceUpdate,
    Preview,
    SchemaRequest,
    SchemaResponse,
)
from datamill.services import datasources as service

router = APIRouter(tags=["data sources"])
BASE = "/projects/{project}/datasources"


class DataSourceList(Model):
    total: int
    page: int
    size: int
    datasources: list[DataSource]


@router.post(
    BASE + "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create a data source; with noVerifySchema false its schema is inferred",
)
def create_datasource(
    name: ResourceName,
    body: DataSourceCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> DataSource:
    return service.create_datasource(runtime, session, access, name, body)


@router.put(
    BASE + "/{name}",
    summary="Update a data source's spec; its schema may gain fields, never lose them",
)
def update_datasource(
    name: ResourceName,
    body: DataSourceUpdate,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> DataSource:
    return service.update_datasource(runtime, session, access, name, body)


@router.get(BASE + "/{name}", summary="Get a data source")
def get_datasource(name: ResourceName, session: SessionDep, access: ProjectReader) -> DataSource:
    return service.get_datasource(session, access, name)


@router.get(BASE, summary="List data sources")
def list_datasources(
    session: SessionDep,
    access: ProjectReader,
    page: PageDep,
    sortBy: Annotated[
        DataSourceSort,
        Query(description="name, createdAt or updatedAt; prefix '-' for descending"),
    ] = "name",
) -> DataSourceList:
    result = service.list_datasources(session, access, page, sortBy)
    return DataSourceList(
        total=result.total, page=result.page, size=result.size, datasources=result.items
    )


@router.delete(
    BASE + "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a data source no job reads",
)
def delete_datasource(name: ResourceName, session: SessionDep, access: ProjectEditor) -> None:
    service.delete_datasource(session, access, name)


@router.get(BASE + "/{name}/preview", summary="Read the first rows of a data source")
def preview_datasource(
    name: ResourceName,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectReader,
    limit: Annotated[int, Query(ge=1, le=10_000, description="rows to return")] = 20,
    at: Annotated[
        BatchTime | None,
        Query(
            description="batch time for fileFilter variables: a date-time, a date or Unix "
            "time (seconds; milliseconds above 2e10); default now"
        ),
    ] = None,
) -> Preview:
    return service.preview_datasource(runtime, session, access, name, limit, at)


@router.post(
    "/projects/{project}/schemas",
    summary="Infer the schema of a data source spec without saving anything",
)
def infer_schema(
    body: SchemaRequest, runtime: RuntimeDep, session: SessionDep, access: ProjectReader
) -> SchemaResponse:
    return SchemaResponse(schema_=service.infer_schema(runtime, session, access, body))
