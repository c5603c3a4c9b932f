"""Request dependencies: the runtime, a session, the caller, and project access by role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from datamill.domain.common import NAME_RULE_TEXT, NAME_SCHEMA, Page, check_name
from datamill.domain.projects import Role
from datamill.domain.users import Principal
from datamill.services.access import ProjectAccess, open_project
from datamill.services.runtime import Runtime
from datamill.services.users import authenticate


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A session per request; anything not committed by the service is rolled back."""
    with runtime.sessions() as session:
        try:
            yield session
        finally:
            session.rollback()


SessionDep = Annotated[Session, Depends(get_session)]

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
auth_token_header = APIKeyHeader(
    name="X-Auth-Token", auto_error=False, description="the same token, as X-Auth-Token"
)


def current_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_token: Annotated[str | None, Depends(auth_token_header)],
) -> Principal:
    token = credentials.credentials if credentials else header_token
    return authenticate(session, token)


CurrentUser = Annotated[Principal, Depends(current_principal)]

ProjectName = Annotated[
    str,
    NAME_SCHEMA,
    Path(description=f"project name: {NAME_RULE_TEXT}; any other text answers 404"),
]


def _access(needed: Role) -> object:
    def dependency(
        project: ProjectName, session: SessionDep, principal: CurrentUser
    ) -> ProjectAccess:
        return open_project(session, principal, project, needed)

    return Depends(dependency)


ProjectReader = Annotated[ProjectAccess, _access(Role.visitor)]
ProjectEditor = Annotated[ProjectAccess, _access(Role.editor)]
ProjectOwner = Annotated[ProjectAccess, _access(Role.owner)]


def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number")] = 1,
    size: Annotated[int, Query(ge=1, le=1000, description="items per page")] = 50,
) -> Page:
    return Page(page=page, size=size)


PageDep = Annotated[Page, Depends(page_params)]
ResourceName = Annotated[
    str,
    AfterValidator(check_name),
    NAME_SCHEMA,
    Path(description=f"resource name: {NAME_RULE_TEXT} (else 400 E18103)"),
]
UserName = Annotated[
    str,
    AfterValidator(check_name),
    NAME_SCHEMA,
    Path(description=f"user name: {NAME_RULE_TEXT} (else 400 E18103)"),
]
MAX_RUN_ID = 2**31 - 1
RunIdPath = Annotated[int, Path(ge=-1, le=MAX_RUN_ID, description="run id; -1 = the latest")]
