"""Engine connections (``/projects/{p}/engines/{name}``): where a project's jobs reach a
remote engine (a Spark Connect server), and which engine a job's ``engine`` field means.

A job's ``engine`` is either an embedded engine of the server (``duckdb``) or the name of
one of its project's engine connections. The connection's host goes through the outbound
guard (an administrator allow-lists private addresses with ``DATAMILL_OUTBOUND_ALLOW``)
when it is saved and each time a job uses it; the session connects to the address the
guard resolved. A token is kept in a secret (its value ``token``), never in the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill import engines
from datamill.domain.common import Page, PageOf
from datamill.domain.engines import EngineConnection, EngineConnectionPut
from datamill.engines.base import Endpoint, Engine
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_host
from datamill.services.access import ProjectAccess
from datamill.services.runtime import Runtime
from datamill.services.secrets import secret_values
from datamill.store.base import fetch_page, utcnow
from datamill.store.engines import EngineConnectionRow
from datamill.store.jobs import JobRow

TOKEN_KEY = "token"  # noqa: S105 - the name of the secret's value, not a value


@dataclass(frozen=True)
class ResolvedEngine:
    """What a job's ``engine`` field names: the engine, and for a remote one where it is."""

    engine: Engine
    endpoint: Endpoint | None = None


def _out(row: EngineConnectionRow) -> EngineConnection:
    return EngineConnection(
        name=row.name,
        type=row.type,
        url=row.url,
        secret=row.secret_name,
        description=row.description,
        default=row.is_default,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def _find(session: Session, project_id: int, name: str) -> EngineConnectionRow | None:
    return session.scalars(
        select(EngineConnectionRow).where(
            EngineConnectionRow.project_id == project_id, EngineConnectionRow.name == name
        )
    ).first()


def _row(session: Session, project_id: int, name: str) -> EngineConnectionRow:
    row = _find(session, project_id, name)
    if row is None:
        raise DatamillError(E.ENGINE_NOT_FOUND, f"engine connection '{name}' does not exist")
    return row


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 15002


def _check(
    runtime: Runtime, session: Session, project_id: int, name: str, body: EngineConnectionPut
) -> None:
    if name in engines.types():
        raise DatamillError(
            E.INVALID_NAME,
            f"name: '{name}' is an engine type; name the connection differently",
            field="name",
        )
    engine = engines.batch_engine(body.type, "type")
    if not engine.capabilities.remote:
        raise DatamillError(
            E.UNKNOWN_ENGINE,
            f"type: engine '{body.type}' runs inside the server and takes no connection",
            field="type",
        )
    host, port = _host_port(body.url)
    check_host(host, port, runtime.settings.outbound_allow, "url")
    if body.secret is not None:
        values = secret_values(runtime, session, project_id, body.secret, "secret")
        if TOKEN_KEY not in values:
            raise DatamillError(
                E.SECRET_KEY_MISSING,
                f"secret: secret '{body.secret}' has no value '{TOKEN_KEY}'",
                field="secret",
            )


def create_connection(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: EngineConnectionPut
) -> EngineConnection:
    _check(runtime, session, access.project_id, name, body)
    row = EngineConnectionRow(
        project_id=access.project_id,
        name=name,
        type=body.type,
        url=body.url,
        secret_name=body.secret,
        description=body.description,
        is_default=body.default,
    )
    _only_default(session, access.project_id, body)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.ENGINE_EXISTS, f"engine connection '{name}' already exists") from None
    return _out(row)


def update_connection(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: EngineConnectionPut
) -> EngineConnection:
    row = _row(session, access.project_id, name)
    _check(runtime, session, access.project_id, name, body)
    if body.type != row.type and _users(session, access.project_id, row):
        raise DatamillError(
            E.HAS_DEPENDANTS,
            f"type: engine connection '{name}' is used by jobs; its type cannot change",
            field="type",
        )
    if row.is_default and not body.default:
        by_type = _users(session, access.project_id, row, by_name=False)
        if by_type:
            raise DatamillError(
                E.HAS_DEPENDANTS,
                f"default: jobs {', '.join(by_type)} run on the project's default "
                f"'{row.type}' connection; make another one the default instead",
                field="default",
            )
    _only_default(session, access.project_id, body)
    row.type, row.url, row.secret_name = body.type, body.url, body.secret
    row.description, row.is_default = body.description, body.default
    row.updated_at = utcnow()
    session.commit()
    return _out(row)


def get_connection(session: Session, access: ProjectAccess, name: str) -> EngineConnection:
    return _out(_row(session, access.project_id, name))


def list_connections(
    session: Session, access: ProjectAccess, page: Page
) -> PageOf[EngineConnection]:
    stmt = select(EngineConnectionRow).where(EngineConnectionRow.project_id == access.project_id)
    total, rows = fetch_page(
        session, stmt.order_by(EngineConnectionRow.name), page.offset, page.size
    )
    return PageOf[EngineConnection](
        total=total, page=page.page, size=page.size, items=[_out(r) for r in rows]
    )


def _only_default(session: Session, project_id: int, body: EngineConnectionPut) -> None:
    """A connection made the default of its type is the only one."""
    if not body.default:
        return
    for other in session.scalars(
        select(EngineConnectionRow).where(
            EngineConnectionRow.project_id == project_id,
            EngineConnectionRow.type == body.type,
            EngineConnectionRow.is_default.is_(True),
        )
    ):
        other.is_default = False
    session.flush()


def _users(
    session: Session, project_id: int, row: EngineConnectionRow, *, by_name: bool = True
) -> list[str]:
    """The jobs that run on ``row``: by its name, or by its type when it is the default."""
    names = {row.name} if by_name else set()
    if row.is_default:
        names.add(row.type)
    rows = session.execute(
        select(JobRow.name, JobRow.definition).where(JobRow.project_id == project_id)
    )
    return sorted(job for job, definition in rows if (definition or {}).get("engine") in names)


def delete_connection(session: Session, access: ProjectAccess, name: str) -> None:
    row = _row(session, access.project_id, name)
    users = _users(session, access.project_id, row)
    if users:
        raise DatamillError(
            E.HAS_DEPENDANTS,
            f"engine connection '{name}' is used by jobs {', '.join(users)}",
        )
    session.delete(row)
    session.commit()


def resolve(
    runtime: Runtime, session: Session, project_id: int, name: str, field: str = "engine"
) -> ResolvedEngine:
    """The batch engine a job's ``engine`` field names, with its endpoint when remote.

    Refused (E18215, naming ``field``) when it names neither an embedded engine nor an
    engine connection of the project; the connection's host is checked by the outbound
    guard again, since what a name resolves to may have changed since it was saved.
    """
    row = _find(session, project_id, name)
    if row is None and name in engines.types() and engines.get(name).capabilities.remote:
        row = session.scalars(
            select(EngineConnectionRow).where(
                EngineConnectionRow.project_id == project_id,
                EngineConnectionRow.type == name,
                EngineConnectionRow.is_default.is_(True),
            )
        ).first()
        if row is None:
            raise DatamillError(
                E.UNKNOWN_ENGINE,
                f"{field}: engine '{name}' runs on a server of its own: create an engine "
                f"connection (POST /projects/{{project}}/engines/{{name}} with type "
                f"'{name}') and name it in {field}, or make one the project's default",
                field=field,
            )
    if row is None:
        return ResolvedEngine(engines.batch_engine(name, field))
    engine = engines.batch_engine(row.type, field)
    host, port = _host_port(row.url)
    address = check_host(host, port, runtime.settings.outbound_allow, field)
    token = None
    if row.secret_name is not None:
        values = secret_values(runtime, session, project_id, row.secret_name, field)
        token = values.get(TOKEN_KEY)
    return ResolvedEngine(
        engine, Endpoint(name=row.name, url=row.url, address=address, token=token)
    )
