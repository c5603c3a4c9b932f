"""Magic variables: system (read-only) and user variables, and their resolved values."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from datamill.api.deps import PageDep, ProjectEditor, ProjectReader, ResourceName, SessionDep
from datamill.domain.common import BatchTime, Model
from datamill.domain.variables import ResolvedVariable, Variable, VariableIn
from datamill.services import variables as service

router = APIRouter(tags=["variables"])
BASE = "/projects/{project}/variables"


class VariableList(Model):
    total: int
    page: int
    size: int
    variables: list[Variable]


@router.post(
    BASE + "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create a user variable (type time or string)",
)
def create_variable(
    name: ResourceName, body: VariableIn, session: SessionDep, access: ProjectEditor
) -> Variable:
    return service.create_variable(session, access, name, body)


@router.put(BASE + "/{name}", summary="Replace a user variable")
def update_variable(
    name: ResourceName, body: VariableIn, session: SessionDep, access: ProjectEditor
) -> Variable:
    return service.update_variable(session, access, name, body)


@router.get(BASE + "/{name}", summary="Get a variable and its value resolved at a batch time")
def get_variable(
    name: ResourceName,
    session: SessionDep,
    access: ProjectReader,
    at: Annotated[
        BatchTime | None,
        Query(
            description="batch time: a date-time, a date or Unix time (seconds; "
            "milliseconds above 2e10); default now"
        ),
    ] = None,
) -> ResolvedVariable:
    return service.get_variable(session, access, name, at)


@router.get(BASE, summary="List variables: system, user, or both")
def list_variables(
    session: SessionDep,
    access: ProjectReader,
    page: PageDep,
    type: Annotated[Literal["system", "user"] | None, Query()] = None,
) -> VariableList:
    result = service.list_variables(session, access, type, page)
    return VariableList(
        total=result.total, page=result.page, size=result.size, variables=result.items
    )


@router.delete(
    BASE + "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user variable no other variable uses",
)
def delete_variable(name: ResourceName, session: SessionDep, access: ProjectEditor) -> None:
    service.delete_variable(session, access, name)
