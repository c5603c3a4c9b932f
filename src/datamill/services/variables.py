"""Magic variables: user variables in the store, system variables built in, one resolver."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.domain.common import Page, PageOf, aware
from datamill.domain.variables import (
    SYSTEM_VARIABLES,
    ResolvedVariable,
    Resolver,
    Variable,
    VariableIn,
    VariableType,
    is_system,
    referenced_names,
    validate_definition,
)
from datamill.errors import DatamillError, E
from datamill.services.access import ProjectAccess
from datamill.store.base import fetch_page, utcnow
from datamill.store.variables import VariableRow


def _definition(row: VariableRow) -> VariableIn:
    return VariableIn.model_construct(
        type=VariableType(row.type), value=row.value, format=row.format
    )


def _out(row: VariableRow) -> Variable:
    return Variable(name=row.name, type=row.type, value=row.value, format=row.format, system=False)


def user_definitions(session: Session, project_id: int) -> dict[str, VariableIn]:
    rows = session.scalars(select(VariableRow).where(VariableRow.project_id == project_id))
    return {row.name: _definition(row) for row in rows}


def load_resolver(
    session: Session, project_id: int, at: datetime, params: Mapping[str, str] | None = None
) -> Resolver:
    """A resolver over the project's variables for the batch time ``at``."""
    return Resolver(user_definitions(session, project_id), at, params)


def _row(session: Session, project_id: int, name: str) -> VariableRow | None:
    return session.scalars(
        select(VariableRow).where(VariableRow.project_id == project_id, VariableRow.name == name)
    ).first()


def _check_refused_name(name: str) -> None:
    if is_system(name):
        raise DatamillError(
            E.VARIABLE_READ_ONLY, f"'{name}' is a system variable and cannot be changed"
        )


def _check_resolves(session: Session, project_id: int, name: str, body: VariableIn) -> None:
    """Syntax, then every reference: unknown names and cycles are refused before saving."""
    validate_definition(name, body)
    definitions = user_definitions(session, project_id)
    definitions[name] = body
    Resolver(definitions, utcnow()).value(name, field="value")


def create_variable(
    session: Session, access: ProjectAccess, name: str, body: VariableIn
) -> Variable:
    _check_refused_name(name)
    if _row(session, access.project_id, name) is not None:
        raise DatamillError(E.VARIABLE_EXISTS, f"variable '{name}' already exists")
    _check_resolves(session, access.project_id, name, body)
    row = VariableRow(
        project_id=access.project_id,
        name=name,
        type=body.type.value,
        value=body.value,
        format=body.format,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.VARIABLE_EXISTS, f"variable '{name}' already exists") from None
    return _out(row)


def update_variable(
    session: Session, access: ProjectAccess, name: str, body: VariableIn
) -> Variable:
    _check_refused_name(name)
    row = _row(session, access.project_id, name)
    if row is None:
        raise DatamillError(E.VARIABLE_NOT_FOUND, f"variable '{name}' does not exist")
    _check_resolves(session, access.project_id, name, body)
    row.type, row.value, row.format = body.type.value, body.value, body.format
    row.updated_at = utcnow()
    session.commit()
    return _out(row)


def get_variable(
    session: Session, access: ProjectAccess, name: str, at: datetime | None
) -> ResolvedVariable:
    """A variable with its value resolved at ``at`` (default: now)."""
    moment = aware(at) if at else utcnow()
    if is_system(name):
        variable = SYSTEM_VARIABLES[name]
    else:
        row = _row(session, access.project_id, name)
        if row is None:
            raise DatamillError(E.VARIABLE_NOT_FOUND, f"variable '{name}' does not exist")
        variable = _out(row)
    resolved = load_resolver(session, access.project_id, moment).value(name)
    return ResolvedVariable(**variable.model_dump(), resolved=resolved, at=moment)


def list_variables(
    session: Session, access: ProjectAccess, kind: Literal["system", "user"] | None, page: Page
) -> PageOf[Variable]:
    system = list(SYSTEM_VARIABLES.values()) if kind in (None, "system") else []
    if kind == "system":
        window = system[page.offset : page.offset + page.size]
        return PageOf[Variable](total=len(system), page=page.page, size=page.size, items=window)
    stmt = select(VariableRow).where(VariableRow.project_id == access.project_id)
    total, rows = fetch_page(session, stmt.order_by(VariableRow.name), 0, page.offset + page.size)
    everything = system + [_out(r) for r in rows]
    return PageOf[Variable](
        total=len(system) + total,
        page=page.page,
        size=page.size,
        items=everything[page.offset : page.offset + page.size],
    )


def delete_variable(session: Session, access: ProjectAccess, name: str) -> None:
    _check_refused_name(name)
    row = _row(session, access.project_id, name)
    if row is None:
        raise DatamillError(E.VARIABLE_NOT_FOUND, f"variable '{name}' does not exist")
    users = sorted(
        other
        for other, definition in user_definitions(session, access.project_id).items()
        if other != name and name in referenced_names(definition.value)
    )
    if users:
        raise DatamillError(
            E.HAS_DEPENDANTS, f"variable '{name}' is used by variables {', '.join(users)}"
        )
    session.delete(row)
    session.commit()
