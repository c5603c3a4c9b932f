"""Data roots and their grants to projects (administrators only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import AfterValidator

from datamill.api.deps import CurrentUser, PageDep, RuntimeDep, SessionDep
from datamill.domain.common import NAME_RULE_TEXT, NAME_SCHEMA, Model, check_name
from datamill.domain.data_roots import ROOT_NAME_RULE, DataRoot, DataRootGrant
from datamill.services import data_roots as service

router = APIRouter(tags=["data roots"])

RootName = Annotated[
    str, Path(description="data root name", pattern=ROOT_NAME_RULE.pattern, max_length=64)
]
GrantedProject = Annotated[
    str,
    AfterValidator(check_name),
    NAME_SCHEMA,
    Path(description=f"project name: {NAME_RULE_TEXT} (else 400 E18103)"),
]


class DataRootList(Model):
    total: int
    page: int
    size: int
    dataRoots: list[DataRoot]


@router.get(
    "/data-roots",
    summary="List the data roots and the projects each is granted to (administrators only)",
)
def list_data_roots(
    runtime: RuntimeDep, session: SessionDep, user: CurrentUser, page: PageDep
) -> DataRootList:
    result = service.list_data_roots(runtime, session, user, page)
    return DataRootList(
        total=result.total, page=result.page, size=result.size, dataRoots=result.items
    )


@router.put(
    "/data-roots/{root}/grants/{project}",
    summary="Grant a whole data root to a project: its paths there become relative to the "
    "root instead of its own folder (administrators only)",
)
def grant_data_root(
    root: RootName,
    project: GrantedProject,
    runtime: RuntimeDep,
    session: SessionDep,
    user: CurrentUser,
) -> DataRootGrant:
    return service.grant_root(runtime, session, user, root, project)


@router.delete(
    "/data-roots/{root}/grants/{project}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a grant: the project sees only its own folder of the root again "
    "(administrators only)",
)
def revoke_data_root(
    root: RootName, project: GrantedProject, session: SessionDep, user: CurrentUser
) -> None:
    service.revoke_root(session, user, root, project)
