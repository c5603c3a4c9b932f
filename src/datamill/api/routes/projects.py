"""Projects and their members."""

from __future__ import annotations

from fastapi import APIRouter, status

from datamill.api.deps import (
    CurrentUser,
    PageDep,
    ProjectEditor,
    ProjectOwner,
    ProjectReader,
    RuntimeDep,
    SessionDep,
    UserName,
)
from datamill.domain.common import Model
from datamill.domain.projects import Member, MemberPut, Project, ProjectCreate, ProjectUpdate
from datamill.services import projects as service

router = APIRouter(tags=["projects"])


class ProjectList(Model):
    total: int
    page: int
    size: int
    projects: list[Project]


class MemberList(Model):
    total: int
    page: int
    size: int
    members: list[Member]


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    summary="Create a project; the caller becomes its owner",
)
def create_project(
    body: ProjectCreate, runtime: RuntimeDep, session: SessionDep, user: CurrentUser
) -> Project:
    return service.create_project(runtime, session, user, body)


@router.get("/projects", summary="List the projects the caller is a member of")
def list_projects(session: SessionDep, user: CurrentUser, page: PageDep) -> ProjectList:
    result = service.list_projects(session, user, page)
    return ProjectList(
        total=result.total, page=result.page, size=result.size, projects=result.items
    )


@router.get("/projects/{project}", summary="Get a project")
def get_project(access: ProjectReader) -> Project:
    return service.project_out(access.project, access.role)


@router.patch("/projects/{project}", summary="Change a project's description")
def update_project(body: ProjectUpdate, session: SessionDep, access: ProjectEditor) -> Project:
    return service.update_project(session, access, body)


@router.delete(
    "/projects/{project}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a project with all its resources and data (owner only)",
)
def delete_project(runtime: RuntimeDep, session: SessionDep, access: ProjectOwner) -> None:
    service.delete_project(runtime, session, access)


@router.get("/projects/{project}/members", summary="List a project's members and their roles")
def list_members(session: SessionDep, access: ProjectReader, page: PageDep) -> MemberList:
    result = service.list_members(session, access, page)
    return MemberList(total=result.total, page=result.page, size=result.size, members=result.items)


@router.put(
    "/projects/{project}/members/{user}", summary="Add a member or change their role (owner only)"
)
def put_member(
    user: UserName, body: MemberPut, session: SessionDep, access: ProjectOwner
) -> Member:
    return service.put_member(session, access, user, body)


@router.delete(
    "/projects/{project}/members/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (owner only); the last owner stays",
)
def remove_member(user: UserName, session: SessionDep, access: ProjectOwner) -> None:
    service.remove_member(session, access, user)
