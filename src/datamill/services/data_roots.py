"""What each project sees of the data roots, and the administrator's grants of whole roots.

A project sees only its own folder of a data root (``<root>/<project>/``; its relative
paths start there), unless an administrator granted it the root: then it sees the whole
root, except the folders of the other projects.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.domain.common import Page, PageOf
from datamill.domain.data_roots import DataRoot, DataRootGrant
from datamill.domain.users import Principal
from datamill.errors import DatamillError, E
from datamill.security.paths import RootView, check_relative_path, data_root
from datamill.services.runtime import Runtime
from datamill.store.data_roots import (
    DataRootGrantRow,
    all_grants,
    get_grant,
    granted_roots,
    project_names,
)
from datamill.store.projects import ProjectRow, get_project


def project_roots(
    runtime: Runtime, session: Session, project_id: int, project: str
) -> dict[str, RootView]:
    """What the project sees of each configured data root."""
    roots = runtime.settings.resolved_data_roots
    granted = granted_roots(session, project_id) & roots.keys()
    names = project_names(session) if granted else []
    return {
        name: RootView.of(name, path, project, name in granted, names)
        for name, path in roots.items()
    }


def check_paths(views: dict[str, RootView], root: str, paths: Sequence[tuple[str, str]]) -> None:
    """Refuse (E18116, naming the field) a root the server does not have, or a path that
    leaves what the project sees of it. ``paths`` are (field, relative path) pairs; a path
    is checked up to its first segment holding a glob or a magic variable."""
    view = data_root(views, root)
    for field, path in paths:
        if path:
            check_relative_path(path, field)
        literal = _literal_prefix(path)
        if literal:
            view.resolve(literal, field)


def _literal_prefix(path: str) -> str:
    parts = []
    for part in path.split("/"):
        if "$" in part or "*" in part or "?" in part or "[" in part:
            break
        parts.append(part)
    return "/".join(parts).rstrip("/")


# --------------------------------------------------------------------------- grants


def _require_admin(principal: Principal) -> None:
    if not principal.isAdmin:
        raise DatamillError(E.FORBIDDEN, "only an administrator may manage data roots")


def _grant_out(row: DataRootGrantRow, project: str) -> DataRootGrant:
    return DataRootGrant(root=row.root, project=project, createdAt=row.created_at)


def list_data_roots(
    runtime: Runtime, session: Session, principal: Principal, page: Page
) -> PageOf[DataRoot]:
    """The configured roots, and roots no longer configured that still have grants."""
    _require_admin(principal)
    roots = runtime.settings.resolved_data_roots
    grants: dict[str, list[DataRootGrant]] = {}
    for row, project in all_grants(session):
        grants.setdefault(row.root, []).append(_grant_out(row, project))
    names = sorted(roots.keys() | grants.keys())
    items = [
        DataRoot(
            name=name,
            path=str(roots[name]) if name in roots else None,
            grants=grants.get(name, []),
        )
        for name in names[page.offset : page.offset + page.size]
    ]
    return PageOf[DataRoot](total=len(names), page=page.page, size=page.size, items=items)


def _project(session: Session, name: str) -> ProjectRow:
    row = get_project(session, name)
    if row is None:
        raise DatamillError(E.PROJECT_NOT_FOUND, f"project '{name}' does not exist")
    return row


def grant_root(
    runtime: Runtime, session: Session, principal: Principal, root: str, project: str
) -> DataRootGrant:
    """Let ``project`` see the whole root (its paths there become relative to the root)."""
    _require_admin(principal)
    if root not in runtime.settings.resolved_data_roots:
        known = ", ".join(sorted(runtime.settings.resolved_data_roots)) or "none"
        raise DatamillError(
            E.PATH_REFUSED, f"root: unknown data root '{root}' (configured: {known})", field="root"
        )
    row = _project(session, project)
    grant = get_grant(session, root, row.id)
    if grant is None:
        grant = DataRootGrantRow(root=root, project_id=row.id)
        session.add(grant)
        try:
            session.commit()
        except IntegrityError:  # granted meanwhile by another request
            session.rollback()
            grant = get_grant(session, root, row.id)
            assert grant is not None
    return _grant_out(grant, project)


def revoke_root(session: Session, principal: Principal, root: str, project: str) -> None:
    """The project sees only its own folder of the root again."""
    _require_admin(principal)
    grant = get_grant(session, root, _project(session, project).id)
    if grant is None:
        raise DatamillError(
            E.GRANT_NOT_FOUND, f"data root '{root}' is not granted to project '{project}'"
        )
    session.delete(grant)
    session.commit()
