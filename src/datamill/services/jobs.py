"""Batch jobs: validation before save (engine, sources, SQL gate, binding) and CRUD."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.domain.common import NAME_RULE, Page, PageOf
from datamill.domain.datasources import SchemaField, is_stream_type
from datamill.domain.jobs import (
    Job,
    JobBody,
    OverlapPolicy,
    Param,
    SrcType,
)
from datamill.engines.base import QueryFailed, Sandbox, TableInput, Unavailable
from datamill.errors import DatamillError, E
from datamill.scheduler import triggers
from datamill.services import datasources as datasource_service
from datamill.services.access import ProjectAccess
from datamill.services.engine_connections import ResolvedEngine, resolve
from datamill.services.jobrefs import body_of, effective, get_job_row, job_sql
from datamill.services.runtime import Runtime
from datamill.services.variables import load_resolver
from datamill.store.base import fetch_page, utcnow
from datamill.store.datasources import DataSourceRow
from datamill.store.jobs import JobRow, JobSourceRow


def _upstream_tables(
    session: Session, project_id: int, job_name: str, self_name: str, trail: tuple[str, ...]
) -> dict[str, str]:
    """tableName -> job, for every src of ``job_name`` and of its own upstream jobs."""
    if job_name == self_name or job_name in trail:
        chain = " -> ".join((*trail, job_name))
        raise DatamillError(
            E.INVALID_JOB, f"srcs: jobs would read each other in a cycle: {chain}", field="srcs"
        )
    row = get_job_row(session, project_id, job_name)
    tables: dict[str, str] = {}
    for src in body_of(row).srcs:
        tables[src.tableName] = job_name
        if src.type == SrcType.Job:
            tables.update(
                _upstream_tables(session, project_id, src.name, self_name, (*trail, job_name))
            )
    return tables


def source_schemas(
    session: Session, project_id: int, name: str, body: JobBody
) -> dict[str, list[SchemaField]]:
    """tableName -> schema of each src, after checking the specification's src rules."""
    schemas: dict[str, list[SchemaField]] = {}
    for i, src in enumerate(body.srcs):
        field = f"srcs[{i}].name"
        if src.type == SrcType.DataSource:
            ds = session.scalars(
                select(DataSourceRow).where(
                    DataSourceRow.project_id == project_id, DataSourceRow.name == src.name
                )
            ).first()
            if ds is None:
                raise DatamillError(
                    E.DATASOURCE_NOT_FOUND,
                    f"{field}: data source '{src.name}' does not exist",
                    field=field,
                )
            if is_stream_type(ds.type):
                raise DatamillError(
                    E.NOT_A_FILE_SOURCE,
                    f"{field}: data source '{src.name}' is a {ds.type} stream connection; "
                    "batch jobs read file, s3 and hdfs data sources",
                    field=field,
                )
            schemas[src.tableName] = [SchemaField.model_validate(f) for f in ds.schema]
        else:
            upstream = get_job_row(session, project_id, src.name, field)
            for table, owner in _upstream_tables(session, project_id, src.name, name, ()).items():
                if table in {s.tableName for s in body.srcs}:
                    raise DatamillError(
                        E.INVALID_JOB,
                        f"srcs: tableName '{table}' is already used by upstream job "
                        f"'{owner}'; table names must be unique along the chain",
                        field="srcs",
                    )
            schemas[src.tableName] = [SchemaField.model_validate(f) for f in upstream.schema]
    return schemas


def bind_output_schema(
    runtime: Runtime, engine: ResolvedEngine, sql: str, schemas: dict[str, list[SchemaField]]
) -> list[SchemaField]:
    """Bind ``sql`` on the ``engine`` against empty tables shaped like the srcs; nothing runs.

    A remote engine's server binds it (Spark's analyzer), so it must be reachable."""
    temp = Path(tempfile.mkdtemp(prefix="bind-", dir=runtime.settings.resolved_data_dir))
    try:
        with engine.engine.session(
            Sandbox(temp_dir=temp / "tmp"), endpoint=engine.endpoint
        ) as session:
            for table, schema in schemas.items():
                session.add_table(TableInput(table, schema))
            columns = session.describe(sql)
    except QueryFailed as exc:
        raise DatamillError(
            E.INVALID_SQL, f"computation.code: {exc.message}", field="computation.code"
        ) from None
    except Unavailable as exc:
        raise DatamillError(
            E.ENGINE_UNAVAILABLE, f"engine: {exc.message}", field="engine"
        ) from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    names = [c.name for c in columns]
    out = []
    for column in columns:
        if not NAME_RULE.fullmatch(column.name) or names.count(column.name) > 1:
            raise DatamillError(
                E.INVALID_SQL,
                f"computation.code: output column '{column.name[:80]}' needs a unique alias "
                "that is a valid field name (… AS name)",
                field="computation.code",
            )
        out.append(SchemaField(key=column.name, valtype=column.valtype))
    return out


def validate(
    runtime: Runtime, session: Session, project_id: int, name: str, body: JobBody
) -> list[SchemaField]:
    """Everything a job needs to run, checked; returns the job's output schema."""
    engine = resolve(runtime, session, project_id, body.engine)
    triggers.validate_scheduler(body.scheduler)
    schemas = source_schemas(session, project_id, name, body)
    if body.is_depend:
        params = effective_params_of_upstream(session, project_id, body.upstream or "")
    else:
        params = list(body.params or [])
    resolver = load_resolver(session, project_id, utcnow(), {p.name: p.default for p in params})
    code = resolver.expand(body.computation.code, "computation.code")
    sql = job_sql(engine.engine.type, code, list(schemas))
    return bind_output_schema(runtime, engine, sql, schemas)


def effective_params_of_upstream(session: Session, project_id: int, upstream: str) -> list[Param]:
    return effective(session, get_job_row(session, project_id, upstream, "srcs")).params


def job_out(row: JobRow) -> Job:
    return Job.model_validate(
        {
            **row.definition,
            "name": row.name,
            "schema": row.schema,
            "scheduleState": row.schedule_state,
            "schedule": {
                "state": row.schedule_state,
                "nextFireTime": row.next_fire_at,
                "lastFireTime": row.last_fire_at,
                "lastOutcome": row.last_outcome,
            },
            "createdAt": row.created_at,
            "updatedAt": row.updated_at,
        }
    )


def apply_schedule(row: JobRow, body: JobBody) -> None:
    """Store what the scheduler needs and compute the first fire time from now."""
    spec = body.scheduler.effective_spec if body.scheduler else None
    row.serial = spec is not None and spec.overlap == OverlapPolicy.queue
    triggers.reset_schedule(row, body, utcnow())


def _save_sources(session: Session, row: JobRow, body: JobBody) -> None:
    session.execute(delete(JobSourceRow).where(JobSourceRow.job_id == row.id))
    for src in body.srcs:
        session.add(
            JobSourceRow(
                job_id=row.id,
                project_id=row.project_id,
                src_type=src.type.value,
                src_name=src.name,
                table_name=src.tableName,
            )
        )


def create_job(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: JobBody
) -> Job:
    if session.scalars(
        select(JobRow.id).where(JobRow.project_id == access.project_id, JobRow.name == name)
    ).first():
        raise DatamillError(E.JOB_EXISTS, f"job '{name}' already exists")
    schema = validate(runtime, session, access.project_id, name, body)
    row = JobRow(
        project_id=access.project_id,
        name=name,
        definition=body.model_dump(mode="json", exclude_none=True),
        schema=[f.model_dump(mode="json") for f in schema],
        upstream=body.upstream,
    )
    apply_schedule(row, body)
    session.add(row)
    try:
        session.flush()
        _save_sources(session, row, body)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.JOB_EXISTS, f"job '{name}' already exists") from None
    return job_out(row)


def update_job(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: JobBody
) -> Job:
    """Replace the whole job, validated as on create."""
    row = get_job_row(session, access.project_id, name)
    schema = validate(runtime, session, access.project_id, name, body)
    row.definition = body.model_dump(mode="json", exclude_none=True)
    row.schema = [f.model_dump(mode="json") for f in schema]
    row.upstream = body.upstream
    row.updated_at = utcnow()
    apply_schedule(row, body)
    _save_sources(session, row, body)
    session.commit()
    return job_out(row)


def get_job(session: Session, access: ProjectAccess, name: str) -> Job:
    return job_out(get_job_row(session, access.project_id, name))


def schedule_preview(
    session: Session, access: ProjectAccess, name: str, count: int
) -> tuple[Job, list[datetime]]:
    """A job and the next ``count`` fire times of its schedule from now (none without one)."""
    job = get_job(session, access, name)
    times = triggers.preview(job.scheduler, utcnow(), count) if job.scheduler else []
    return job, times


def list_jobs(
    session: Session,
    access: ProjectAccess,
    page: Page,
    src_datasource: str | None,
    src_job: str | None,
) -> PageOf[Job]:
    if src_datasource and src_job:
        raise DatamillError(
            E.INVALID_PARAMETER,
            "srcDatasource and srcJob cannot be given together",
            field="srcDatasource",
        )
    stmt = select(JobRow).where(JobRow.project_id == access.project_id)
    for kind, value in ((SrcType.DataSource, src_datasource), (SrcType.Job, src_job)):
        if value:
            stmt = stmt.where(
                JobRow.id.in_(
                    select(JobSourceRow.job_id).where(
                        JobSourceRow.project_id == access.project_id,
                        JobSourceRow.src_type == kind.value,
                        JobSourceRow.src_name == value,
                    )
                )
            )
    total, rows = fetch_page(session, stmt.order_by(JobRow.name), page.offset, page.size)
    return PageOf[Job](
        total=total, page=page.page, size=page.size, items=[job_out(r) for r in rows]
    )


def readers_of(session: Session, project_id: int, kind: SrcType, name: str) -> list[str]:
    """Names of the jobs that read the data source or job ``name``."""
    return list(
        session.scalars(
            select(JobRow.name)
            .join(JobSourceRow, JobSourceRow.job_id == JobRow.id)
            .where(
                JobSourceRow.project_id == project_id,
                JobSourceRow.src_type == kind.value,
                JobSourceRow.src_name == name,
            )
        ).all()
    )


def delete_job(runtime: Runtime, session: Session, access: ProjectAccess, name: str) -> None:
    row = get_job_row(session, access.project_id, name)
    readers = readers_of(session, access.project_id, SrcType.Job, name)
    if readers:
        raise DatamillError(
            E.HAS_DEPENDANTS, f"job '{name}' is read by jobs {', '.join(sorted(readers))}"
        )
    session.delete(row)
    session.commit()
    shutil.rmtree(
        runtime.settings.projects_dir / access.project.name / "warehouse" / name, ignore_errors=True
    )


datasource_service.DEPENDANTS.append(
    lambda session, project_id, name: [
        f"job '{job}'" for job in readers_of(session, project_id, SrcType.DataSource, name)
    ]
)
