"""Exports: CRUD (validated against the job's schema), queueing after each successful job
run, execution by workers, history and rerun of one batch.

An export run is a run (see :mod:`datamill.store.runs`) whose ``target`` is the export's
id: it shares the state machine, claims, heartbeats, logs and retries of job runs. It
carries the ``run_id`` and ``batch_time`` of the job run whose result it writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.connectors.sinks import SINKS
from datamill.connectors.sinks.base import ExportBatch, ExportContext, ExportOutcome, Sink
from datamill.connectors.sinks.file.spec import FileExportSpec
from datamill.domain.common import Page, validation_failure
from datamill.domain.datasources import SchemaField
from datamill.domain.exports import EXPORT_TYPE_ALIASES, Export, ExportCreate, ExportHistory
from datamill.domain.runs import (
    TERMINAL,
    ExportRunEntry,
    RerunResult,
    RunLog,
    RunStatus,
    check_rerun,
)
from datamill.domain.variables import Resolver, VariableIn
from datamill.engines.duckdb.writers import copy_parquet
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_targets
from datamill.services import runs
from datamill.services.access import ProjectAccess
from datamill.services.data_roots import check_paths, project_roots
from datamill.services.jobrefs import get_job_row
from datamill.services.runtime import Runtime
from datamill.services.secrets import secret_values
from datamill.services.wakeups import mark_runs_changed
from datamill.store.base import fetch_page, utcnow
from datamill.store.exports import ExportRow
from datamill.store.jobs import JobRow
from datamill.store.projects import ProjectRow
from datamill.store.runs import JOB_TARGET, RunRow


def export_types() -> list[str]:
    """Every name an export's ``type`` may take: the registered kinds and their aliases."""
    return sorted({*SINKS, *EXPORT_TYPE_ALIASES})


def sink_of(type_: str) -> Sink:
    """The registered sink of an export kind; the kinds are the registry's keys."""
    sink = SINKS.get(type_)
    if sink is None:
        raise DatamillError(
            E.INVALID_PARAMETER,
            f"type: unknown export type '{type_[:32]}'; use one of {', '.join(sorted(SINKS))}",
            field="type",
        )
    return sink


def typed_spec(sink: Sink, spec: dict[str, Any]) -> BaseModel:
    try:
        return sink.spec_model.model_validate(spec)
    except ValidationError as exc:
        raise validation_failure(exc, prefix="spec") from None


def _out(row: ExportRow) -> Export:
    return Export(
        name=row.name,
        type=row.type,
        spec=row.spec,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def _row(session: Session, job: JobRow, name: str) -> ExportRow:
    row = session.scalars(
        select(ExportRow).where(ExportRow.job_id == job.id, ExportRow.name == name)
    ).first()
    if row is None:
        raise DatamillError(
            E.EXPORT_NOT_FOUND, f"export '{name}' of job '{job.name}' does not exist"
        )
    return row


def _checked(
    runtime: Runtime, session: Session, job: JobRow, type_: str, spec: dict[str, Any]
) -> tuple[Sink, BaseModel]:
    """The typed spec of a save: valid for the job's schema, its secret present and every
    address it connects to allowed by the outbound guard (as for data sources)."""
    sink = sink_of(type_)
    model = typed_spec(sink, spec)
    sink.validate(model, [SchemaField.model_validate(f) for f in job.schema])
    if isinstance(model, FileExportSpec):
        project = session.get(ProjectRow, job.project_id)
        assert project is not None  # the job was just read in the project
        views = project_roots(runtime, session, project.id, project.name)
        check_paths(views, model.root, [("spec.path", model.path)])
    secret = sink.secret_name(model)
    values = (
        secret_values(runtime, session, job.project_id, secret, "spec.secret") if secret else {}
    )
    check_targets(sink.outbound_targets(model, values), runtime.settings.outbound_allow)
    return sink, model


def create_export(
    runtime: Runtime,
    session: Session,
    access: ProjectAccess,
    job_name: str,
    name: str,
    body: ExportCreate,
) -> Export:
    job = get_job_row(session, access.project_id, job_name)
    sink, model = _checked(runtime, session, job, body.type, body.spec)
    row = ExportRow(
        project_id=access.project_id,
        job_id=job.id,
        name=name,
        type=body.type,
        spec=model.model_dump(mode="json", exclude_none=True),
        secret_name=sink.secret_name(model),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(
            E.EXPORT_EXISTS, f"export '{name}' of job '{job_name}' already exists"
        ) from None
    return _out(row)


def update_export(
    runtime: Runtime,
    session: Session,
    access: ProjectAccess,
    job_name: str,
    name: str,
    spec: dict[str, Any],
) -> Export:
    job = get_job_row(session, access.project_id, job_name)
    row = _row(session, job, name)
    sink, model = _checked(runtime, session, job, row.type, spec)
    row.spec = model.model_dump(mode="json", exclude_none=True)
    row.secret_name = sink.secret_name(model)
    row.updated_at = utcnow()
    session.commit()
    return _out(row)


def get_export(session: Session, access: ProjectAccess, job_name: str, name: str) -> Export:
    return _out(_row(session, get_job_row(session, access.project_id, job_name), name))


def list_exports(
    session: Session, access: ProjectAccess, job_name: str, page: Page
) -> tuple[int, list[Export]]:
    job = get_job_row(session, access.project_id, job_name)
    stmt = select(ExportRow).where(ExportRow.job_id == job.id).order_by(ExportRow.name)
    total, rows = fetch_page(session, stmt, page.offset, page.size)
    return total, [_out(r) for r in rows]


def delete_export(session: Session, access: ProjectAccess, job_name: str, name: str) -> None:
    job = get_job_row(session, access.project_id, job_name)
    row = _row(session, job, name)
    active = session.scalar(
        select(RunRow.id)
        .where(RunRow.export_id == row.id, RunRow.status.in_(["Running", "Cancelling"]))
        .limit(1)
    )
    if active is not None:
        raise DatamillError(E.RUN_STATE_CONFLICT, f"export '{name}' is running; stop its run first")
    session.delete(row)
    session.commit()


# --- queueing and history ------------------------------------------------------------------


def queue_exports(session: Session, job_run: RunRow) -> int:
    """After a successful job run: one export run per export (rerun if the batch had one).

    Runs in the caller's transaction (see :func:`datamill.services.runs.finish`).
    """
    if job_run.target != JOB_TARGET:
        return 0
    count = 0
    for export in session.scalars(select(ExportRow).where(ExportRow.job_id == job_run.job_id)):
        existing = _batch_export_run(session, job_run.job_id, export.id, job_run.batch_time)
        if existing is None:
            new_export_run(session, job_run, export, "queued for the batch")
            count += 1
        elif RunStatus(existing.status) in TERMINAL:
            count += int(
                runs.restart(session, existing, "the job's batch succeeded again", commit=False)
            )
    return count


def export_history(
    session: Session, access: ProjectAccess, job_name: str, name: str, page: Page
) -> ExportHistory:
    job = get_job_row(session, access.project_id, job_name)
    row = _row(session, job, name)
    stmt = select(RunRow).where(RunRow.export_id == row.id).order_by(RunRow.run_id.desc())
    total, found = fetch_page(session, stmt, page.offset, page.size)
    return ExportHistory(
        total=total,
        page=page.page,
        size=page.size,
        history=[runs.export_entry(r, name) for r in found],
    )


@dataclass(frozen=True)
class ExportRunKey:
    """Where the export run of one batch is (or will be) in the store."""

    job_name: str
    export_name: str
    run_id: int  # the job run's id, -1 resolved
    job_pk: int
    job_run_pk: int
    export_pk: int
    batch_time: datetime
    job_run_status: RunStatus  # when read

    @classmethod
    def of(cls, job: JobRow, job_run: RunRow, export: ExportRow) -> ExportRunKey:
        return cls(
            job.name,
            export.name,
            job_run.run_id,
            job.id,
            job_run.id,
            export.id,
            job_run.batch_time,
            RunStatus(job_run.status),
        )


def _batch_export_run(
    session: Session, job_pk: int, export_pk: int, batch_time: datetime
) -> RunRow | None:
    """The export run of one batch (unique: an export runs once per batch, then reruns)."""
    return session.scalars(
        select(RunRow).where(
            RunRow.job_id == job_pk, RunRow.target == export_pk, RunRow.batch_time == batch_time
        )
    ).first()


def _export_run_of_batch(
    session: Session, access: ProjectAccess, job_name: str, name: str, run_id: int
) -> tuple[ExportRunKey, RunRow | None]:
    export = _row(session, get_job_row(session, access.project_id, job_name), name)
    job, job_run = runs.get_run(session, access.project_id, job_name, run_id)
    key = ExportRunKey.of(job, job_run, export)
    return key, _batch_export_run(session, job.id, export.id, job_run.batch_time)


def export_run(
    session: Session, access: ProjectAccess, job_name: str, name: str, run_id: int
) -> tuple[ExportRunKey, ExportRunEntry | None]:
    """The export run of the batch of job run ``run_id`` (-1: the job's latest run), or
    ``None`` while there is none; the job and the export must exist."""
    key, run = _export_run_of_batch(session, access, job_name, name, run_id)
    return key, (runs.export_entry(run, name) if run is not None else None)


def no_export_run(key: ExportRunKey) -> DatamillError:
    """404 for a batch without an export run, saying why there is none (yet)."""
    if key.job_run_status not in TERMINAL:
        why = f"not yet: that run is {key.job_run_status.value}"
    elif key.job_run_status != RunStatus.Successful:
        why = f"that run is {key.job_run_status.value}, so there is nothing to export"
    else:
        why = "the export was created after that run: rerun the export for that batch"
    return DatamillError(
        E.RUN_NOT_FOUND,
        f"export '{key.export_name}' has no run for run {key.run_id} of job "
        f"'{key.job_name}' ({why})",
        field="runId",
    )


def export_run_settled(runtime: Runtime, key: ExportRunKey) -> bool:
    """Whether a wait for the export run of ``key``'s batch is over: that run ended, or
    there is none and the job run has ended (none will be queued then)."""
    with runtime.sessions() as session:
        status = session.scalar(
            select(RunRow.status).where(
                RunRow.job_id == key.job_pk,
                RunRow.target == key.export_pk,
                RunRow.batch_time == key.batch_time,
            )
        )
        if status is None:
            status = session.scalar(select(RunRow.status).where(RunRow.id == key.job_run_pk))
    return status is None or RunStatus(status) in TERMINAL


def export_run_log(
    session: Session, access: ProjectAccess, job_name: str, name: str, run_id: int
) -> RunLog:
    """The log of the export run of the batch of job run ``run_id`` (-1: the latest)."""
    key, run = _export_run_of_batch(session, access, job_name, name, run_id)
    if run is None:
        raise no_export_run(key)
    return runs.log_of(session, run)


def rerun_export(
    session: Session, access: ProjectAccess, job_name: str, name: str, run_id: int
) -> RerunResult:
    """Export one batch again: the export run of that batch, or a new one if it had none."""
    job, job_run = runs.get_run(session, access.project_id, job_name, run_id)
    export = _row(session, job, name)
    if RunStatus(job_run.status) != RunStatus.Successful:
        raise DatamillError(
            E.RUN_STATE_CONFLICT,
            f"run {job_run.run_id} of job '{job_name}' is {job_run.status}; "
            "only a Successful run's result can be exported",
        )
    existing = _batch_export_run(session, job.id, export.id, job_run.batch_time)
    if existing is None:
        new_export_run(session, job_run, export, "queued on request")
        session.commit()
        return RerunResult(preStatus=RunStatus.Successful, postStatus=RunStatus.Ready, rerunCount=0)
    before = RunStatus(existing.status)
    after = check_rerun(before, f"{job_name}/{name}", existing.run_id)
    if not runs.restart(session, existing, f"requested by {access.principal.name}"):
        raise DatamillError(E.RUN_STATE_CONFLICT, "the export run changed state meanwhile")
    return RerunResult(preStatus=before, postStatus=after, rerunCount=existing.rerun_count)


def new_export_run(session: Session, job_run: RunRow, export: ExportRow, why: str) -> RunRow:
    """Add a Ready export run for the batch of ``job_run`` (in the caller's transaction)."""
    run = RunRow(
        project_id=job_run.project_id,
        job_id=job_run.job_id,
        run_id=job_run.run_id,
        target=export.id,
        export_id=export.id,
        batch_time=job_run.batch_time,
        status=RunStatus.Ready.value,
        params=dict(job_run.params),
        variables=dict(job_run.variables),
        trigger="export",
    )
    session.add(run)
    session.flush()
    mark_runs_changed(session)
    runs.log_line(session, run.id, f"export '{export.name}' {why}", commit=False)
    return run


# --- execution -----------------------------------------------------------------------------


def execute_export(
    runtime: Runtime, session: Session, run: RunRow, temp_dir: Path, log: Any
) -> ExportOutcome:
    """Write the batch of ``run`` with its export's sink (called by a worker)."""
    export = session.get(ExportRow, run.export_id) if run.export_id else None
    job = session.get(JobRow, run.job_id)
    project = session.get(ProjectRow, run.project_id)
    if export is None or job is None or project is None:
        raise DatamillError(E.EXPORT_NOT_FOUND, "the export or its job no longer exists")
    job_run = session.scalars(
        select(RunRow).where(
            RunRow.job_id == job.id,
            RunRow.target == JOB_TARGET,
            RunRow.batch_time == run.batch_time,
        )
    ).first()
    if (
        job_run is None
        or job_run.result_path is None
        or RunStatus(job_run.status) != RunStatus.Successful
    ):
        raise DatamillError(
            E.RESULT_NOT_AVAILABLE, "the job run of this batch has no successful result to export"
        )
    sink = sink_of(export.type)
    spec = typed_spec(sink, export.spec)
    secret = sink.secret_name(spec)
    values = secret_values(runtime, session, project.id, secret, "spec.secret") if secret else {}
    variables = {k: VariableIn.model_validate(v) for k, v in run.variables.items()}
    folder = Path(job_run.result_path)
    batch = ExportBatch(
        project=project.name,
        job=job.name,
        export=export.name,
        run_id=run.run_id,
        batch_time=run.batch_time,
        schema=[SchemaField.model_validate(f) for f in job.schema],
        parquet_files=sorted(folder.glob("*.parquet")) if folder.is_dir() else [],
        resolver=Resolver(variables, run.batch_time, run.params),
    )
    ctx = ExportContext(
        data_roots=project_roots(runtime, session, project.id, project.name),
        outbound_allow=runtime.settings.outbound_allow,
        secret_values=values,
        temp_dir=temp_dir,
        log=log,
        copy_parquet=copy_parquet,
        extra={"rerun_count": run.rerun_count, "attempt": run.attempt},
    )
    temp_dir.mkdir(parents=True, exist_ok=True)
    try:
        return sink.write(spec, batch, ctx)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
