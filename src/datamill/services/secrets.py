"""Secrets: encrypted at rest with the server key, write-only through the API."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.connectors.sinks import SINKS
from datamill.domain.common import Page, PageOf
from datamill.domain.secrets import Secret, SecretPut
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_targets
from datamill.services.access import ProjectAccess
from datamill.services.runtime import Runtime
from datamill.store.base import fetch_page, utcnow
from datamill.store.datasources import DataSourceRow
from datamill.store.engines import EngineConnectionRow
from datamill.store.exports import ExportRow
from datamill.store.jobs import JobRow
from datamill.store.secrets import SecretRow


def _out(row: SecretRow) -> Secret:
    return Secret(
        name=row.name,
        description=row.description,
        keys=[k for k in row.keys.split(",") if k],
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def _row(session: Session, project_id: int, name: str) -> SecretRow:
    row = session.scalars(
        select(SecretRow).where(SecretRow.project_id == project_id, SecretRow.name == name)
    ).first()
    if row is None:
        raise DatamillError(E.SECRET_NOT_FOUND, f"secret '{name}' does not exist")
    return row


def create_secret(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: SecretPut
) -> Secret:
    row = SecretRow(
        project_id=access.project_id,
        name=name,
        description=body.description,
        ciphertext=runtime.secret_box.seal(body.values),
        keys=",".join(sorted(body.values)),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.SECRET_EXISTS, f"secret '{name}' already exists") from None
    return _out(row)


def _check_destinations(
    runtime: Runtime, session: Session, project_id: int, name: str, values: dict[str, str]
) -> None:
    """Refuse (E18118) new values that would point an export naming the secret at an
    address the outbound guard refuses: a ``report``'s database URL lives in its secret, so
    changing the secret is saving that export's destination."""
    exports = session.execute(
        select(ExportRow.name, ExportRow.type, ExportRow.spec).where(
            ExportRow.project_id == project_id, ExportRow.secret_name == name
        )
    )
    for export, type_, spec in exports:
        sink = SINKS.get(type_)
        if sink is None:
            continue
        try:
            model = sink.spec_model.model_validate(spec)
        except ValidationError:
            continue  # a spec saved under older rules: its run reports what is wrong
        targets = sink.outbound_targets(model, values)
        check_targets(
            [(h, p, f"values (export '{export}' connects there)") for h, p, _ in targets],
            runtime.settings.outbound_allow,
        )


def update_secret(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: SecretPut
) -> Secret:
    row = _row(session, access.project_id, name)
    _check_destinations(runtime, session, access.project_id, name, body.values)
    row.description = body.description
    row.ciphertext = runtime.secret_box.seal(body.values)
    row.keys = ",".join(sorted(body.values))
    row.updated_at = utcnow()
    session.commit()
    return _out(row)


def get_secret(session: Session, access: ProjectAccess, name: str) -> Secret:
    return _out(_row(session, access.project_id, name))


def list_secrets(session: Session, access: ProjectAccess, page: Page) -> PageOf[Secret]:
    stmt = select(SecretRow).where(SecretRow.project_id == access.project_id)
    total, rows = fetch_page(session, stmt.order_by(SecretRow.name), page.offset, page.size)
    return PageOf[Secret](
        total=total, page=page.page, size=page.size, items=[_out(r) for r in rows]
    )


def delete_secret(session: Session, access: ProjectAccess, name: str) -> None:
    row = _row(session, access.project_id, name)
    users = (
        [
            f"data source '{ds}'"
            for ds in session.scalars(
                select(DataSourceRow.name).where(
                    DataSourceRow.project_id == access.project_id, DataSourceRow.secret_name == name
                )
            )
        ]
        + [
            f"export '{job}/{export}'"
            for export, job in session.execute(
                select(ExportRow.name, JobRow.name)
                .join(JobRow, JobRow.id == ExportRow.job_id)
                .where(ExportRow.project_id == access.project_id, ExportRow.secret_name == name)
            )
        ]
        + [
            f"engine connection '{connection}'"
            for connection in session.scalars(
                select(EngineConnectionRow.name).where(
                    EngineConnectionRow.project_id == access.project_id,
                    EngineConnectionRow.secret_name == name,
                )
            )
        ]
    )
    if users:
        raise DatamillError(
            E.HAS_DEPENDANTS, f"secret '{name}' is used by {', '.join(sorted(users))}"
        )
    session.delete(row)
    session.commit()


def secret_values(
    runtime: Runtime, session: Session, project_id: int, name: str, field: str
) -> dict[str, str]:
    """The decrypted values of a secret, for connectors only; never for API responses."""
    row = session.scalars(
        select(SecretRow).where(SecretRow.project_id == project_id, SecretRow.name == name)
    ).first()
    if row is None:
        raise DatamillError(
            E.SECRET_NOT_FOUND, f"{field}: secret '{name}' does not exist", field=field
        )
    return runtime.secret_box.open(row.ciphertext)
