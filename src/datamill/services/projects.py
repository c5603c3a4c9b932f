"""Projects and their members."""

from __future__ import annotations

import shutil

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.domain.common import Page, PageOf
from datamill.domain.projects import Member, MemberPut, Project, ProjectCreate, ProjectUpdate, Role
from datamill.domain.users import Principal
from datamill.errors import DatamillError, E
from datamill.services.access import ProjectAccess
from datamill.services.runtime import Runtime
from datamill.services.users import get_user_row
from datamill.store.base import fetch_page, utcnow
from datamill.store.projects import (
    MembershipRow,
    ProjectRow,
    count_owners,
    get_membership,
    get_project,
)
from datamill.store.users import UserRow


def project_out(row: ProjectRow, role: Role) -> Project:
    return Project(
        name=row.name,
        description=row.description,
        role=role,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def create_project(
    runtime: Runtime, session: Session, principal: Principal, body: ProjectCreate
) -> Project:
    """Create a project; its creator becomes its owner."""
    row = ProjectRow(name=body.name, description=body.description)
    session.add(row)
    try:
        session.flush()
        session.add(MembershipRow(project_id=row.id, user_id=principal.id, role=Role.owner))
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.PROJECT_EXISTS, f"project '{body.name}' already exists") from None
    (runtime.settings.projects_dir / row.name).mkdir(parents=True, exist_ok=True)
    return project_out(row, Role.owner)


def project_exists(session: Session, name: str) -> bool:
    return get_project(session, name) is not None


def list_projects(session: Session, principal: Principal, page: Page) -> PageOf[Project]:
    if principal.isAdmin:
        stmt = select(ProjectRow).order_by(ProjectRow.name)
        total, rows = fetch_page(session, stmt, page.offset, page.size)
        items = [project_out(r, Role.owner) for r in rows]
    else:
        joined = (
            select(ProjectRow, MembershipRow.role)
            .join(MembershipRow, MembershipRow.project_id == ProjectRow.id)
            .where(MembershipRow.user_id == principal.id)
            .order_by(ProjectRow.name)
        )
        total = len(session.execute(joined).all())
        pairs = session.execute(joined.offset(page.offset).limit(page.size)).all()
        items = [project_out(p, Role(role)) for p, role in pairs]
    return PageOf[Project](total=total, page=page.page, size=page.size, items=items)


def update_project(session: Session, access: ProjectAccess, body: ProjectUpdate) -> Project:
    access.project.description = body.description
    access.project.updated_at = utcnow()
    session.commit()
    return project_out(access.project, access.role)


def delete_project(runtime: Runtime, session: Session, access: ProjectAccess) -> None:
    """Delete a project with everything in it: metadata and its data folder."""
    name = access.project.name
    session.delete(access.project)
    session.commit()
    shutil.rmtree(runtime.settings.projects_dir / name, ignore_errors=True)


def _member_out(membership: MembershipRow, user: UserRow) -> Member:
    return Member(user=user.name, role=Role(membership.role), createdAt=membership.created_at)


def list_members(session: Session, access: ProjectAccess, page: Page) -> PageOf[Member]:
    stmt = (
        select(MembershipRow, UserRow)
        .join(UserRow, UserRow.id == MembershipRow.user_id)
        .where(MembershipRow.project_id == access.project_id)
        .order_by(UserRow.name)
    )
    pairs = session.execute(stmt).all()
    window = pairs[page.offset : page.offset + page.size]
    return PageOf[Member](
        total=len(pairs),
        page=page.page,
        size=page.size,
        items=[_member_out(m, u) for m, u in window],
    )


def put_member(session: Session, access: ProjectAccess, user_name: str, body: MemberPut) -> Member:
    """Add a user to the project or change their role; a project keeps at least one owner."""
    user = get_user_row(session, user_name)
    membership = get_membership(session, access.project_id, user.id)
    if membership is None:
        membership = MembershipRow(project_id=access.project_id, user_id=user.id, role=body.role)
        session.add(membership)
    else:
        if (
            membership.role == Role.owner
            and body.role != Role.owner
            and count_owners(session, access.project_id) <= 1
        ):
            raise DatamillError(E.LAST_OWNER, f"'{user_name}' is the project's last owner")
        membership.role = body.role
    session.commit()
    return _member_out(membership, user)


def remove_member(session: Session, access: ProjectAccess, user_name: str) -> None:
    user = get_user_row(session, user_name)
    membership = get_membership(session, access.project_id, user.id)
    if membership is None:
        raise DatamillError(
            E.MEMBER_NOT_FOUND, f"user '{user_name}' is not a member of '{access.project.name}'"
        )
    if membership.role == Role.owner and count_owners(session, access.project_id) <= 1:
        raise DatamillError(E.LAST_OWNER, f"'{user_name}' is the project's last owner")
    session.delete(membership)
    session.commit()
