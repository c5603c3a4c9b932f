"""Who may do what in a project: members by role, administrators everywhere.

A caller who is not a member of a project gets "project does not exist" (404), so project
names do not leak across tenants; a member whose role is too low gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from datamill.domain.common import NAME_RULE
from datamill.domain.projects import Role
from datamill.domain.users import Principal
from datamill.errors import DatamillError, E
from datamill.store.projects import ProjectRow, get_membership, get_project


@dataclass(frozen=True)
class ProjectAccess:
    project: ProjectRow
    role: Role
    principal: Principal

    @property
    def project_id(self) -> int:
        return self.project.id


def open_project(session: Session, principal: Principal, name: str, needed: Role) -> ProjectAccess:
    """The project ``name`` as ``principal`` sees it, if their role is at least ``needed``."""
    project = get_project(session, name) if NAME_RULE.fullmatch(name) else None
    role: Role | None = None
    if project is not None:
        if principal.isAdmin:
            role = Role.owner
        else:
            membership = get_membership(session, project.id, principal.id)
            role = Role(membership.role) if membership else None
    if project is None or role is None:
        raise DatamillError(E.PROJECT_NOT_FOUND, f"project '{name}' does not exist")
    if not role.allows(needed):
        raise DatamillError(
            E.FORBIDDEN,
            f"role '{role.value}' in project '{name}' does not allow this; "
            f"it needs '{needed.value}' or higher",
        )
    return ProjectAccess(project, role, principal)


def service_access(session: Session, name: str, principal: Principal) -> ProjectAccess | None:
    """Owner access to the project ``name`` for the service's own processes (the streaming
    engine), which act for nobody; None when the project is gone."""
    project = get_project(session, name)
    return None if project is None else ProjectAccess(project, Role.owner, principal)
