"""Looking up jobs and what they run with (shared by jobs, runs, the scheduler, workers)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from datamill import engines
from datamill.domain.jobs import Container, JobBody, Param, Scheduler, SchedulerType
from datamill.errors import DatamillError, E
from datamill.security.sql_gate import gate
from datamill.store.jobs import JobRow


@dataclass(frozen=True)
class Effective:
    """What a job runs with: a depend job inherits these from its upstream chain."""

    container: Container
    params: list[Param]
    scheduler: Scheduler


DEFAULT_CONTAINER = Container(type="1U2G", count=1)
MANUAL = Scheduler(type=SchedulerType.manual)


def get_job_row(session: Session, project_id: int, name: str, field: str | None = None) -> JobRow:
    row = session.scalars(
        select(JobRow).where(JobRow.project_id == project_id, JobRow.name == name)
    ).first()
    if row is None:
        where = f"{field}: " if field else ""
        raise DatamillError(E.JOB_NOT_FOUND, f"{where}job '{name}' does not exist", field=field)
    return row


def body_of(row: JobRow) -> JobBody:
    return JobBody.model_validate(row.definition)


def effective(session: Session, row: JobRow) -> Effective:
    """Container, params and scheduler of a job, following depend jobs to their root."""
    seen: set[int] = set()
    body = body_of(row)
    scheduler = body.scheduler or MANUAL
    while body.is_depend and row.id not in seen:
        seen.add(row.id)
        row = get_job_row(session, row.project_id, body.upstream or "")
        body = body_of(row)
    return Effective(
        container=body.container or DEFAULT_CONTAINER,
        params=list(body.params or []),
        scheduler=scheduler,
    )


def job_sql(engine: str, code: str, tables: Collection[str]) -> str:
    """The query a job runs for its expanded ``code``: one read-only query over ``tables``.

    Checked twice, before anything binds: by the SQL gate (sqlglot: nesting, statements,
    tables) and by the engine on its own parse tree (statements, tables, the allow-list of
    functions), whose text is the one that runs.
    """
    gate(code, tables)
    return engines.get(engine).check_query(code, tables, "computation.code")
