"""Preparing one batch run of a SQL job: everything it needs, read from the store.

The run's inputs are fixed before the engine starts: the data sources' files for the batch
(fileFilter and magic variables expanded at the batch time with the run's frozen params and
variables) and the upstream jobs' results for the same batch. The session may read exactly
those files and write only into the run's own staging folder; the staged result is moved
into the warehouse (``warehouse/<job>/batch=<time>/``) only when the query succeeded.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from datamill.connectors.files import FileSet
from datamill.domain.datasources import FormatSpec, SchemaField, parse_spec
from datamill.domain.jobs import Src, SrcType
from datamill.domain.variables import Resolver, VariableIn
from datamill.engines.base import Endpoint, FileStamp, Limits, Sandbox, TableInput
from datamill.errors import DatamillError, E
from datamill.services.datasources import SourceReader
from datamill.services.engine_connections import resolve
from datamill.services.jobrefs import body_of, effective, get_job_row, job_sql
from datamill.services.runtime import Runtime
from datamill.store.datasources import DataSourceRow
from datamill.store.jobs import JobRow
from datamill.store.projects import ProjectRow
from datamill.store.runs import RunRow


def batch_key(batch_time: datetime) -> str:
    """The folder name of a batch: sortable, filesystem-safe, unique to the microsecond."""
    return "batch=" + batch_time.strftime("%Y%m%dT%H%M%S%fZ")


def warehouse(runtime: Runtime, project: str, job: str) -> Path:
    return runtime.settings.projects_dir / project / "warehouse" / job


@dataclass
class PreparedRun:
    """Everything a run needs, resolved from the store before the engine starts."""

    engine: str
    sql: str
    tables: list[TableInput]
    sandbox: Sandbox
    staging: Path
    target: Path
    bytes_in: int
    notes: list[str] = field(default_factory=list)
    inputs: list[FileSet] = field(default_factory=list)

    def read_refusal(self) -> DatamillError | None:
        """The outbound refusal (E18118) behind a failed read of the run's data sources, if
        one is: the engine only reports that reading a remote file failed."""
        for files in self.inputs:
            error = files.read_error()
            if isinstance(error, DatamillError):
                return error
        return None

    endpoint: Endpoint | None = None
    """Where a remote engine answers (the job's engine connection)."""


def _src_spec(ds: DataSourceRow, src: Src) -> FormatSpec:
    spec = parse_spec(ds.type, ds.spec)
    if src.fileFilter is not None:
        spec = spec.model_copy(update={"fileFilter": src.fileFilter})
    return spec


def prepare(runtime: Runtime, session: Session, run: RunRow) -> PreparedRun:
    """Resolve the run's inputs, SQL and sandbox (raises DatamillError on bad input)."""
    job = session.get(JobRow, run.job_id)
    project = session.get(ProjectRow, run.project_id)
    if job is None or project is None:
        raise DatamillError(E.JOB_NOT_FOUND, "the run's job no longer exists")
    body = body_of(job)
    settings = runtime.settings
    variables = {k: VariableIn.model_validate(v) for k, v in run.variables.items()}
    resolver = Resolver(variables, run.batch_time, run.params)
    engine = resolve(runtime, session, project.id, body.engine)
    sql = job_sql(
        engine.engine.type,
        resolver.expand(body.computation.code, "computation.code"),
        [s.tableName for s in body.srcs],
    )
    run_dir = settings.projects_dir / project.name / "runs" / f"{run.id}-{run.attempt}"
    staging = run_dir / "out"
    shutil.rmtree(run_dir, ignore_errors=True)
    staging.mkdir(parents=True)
    reader = SourceReader(runtime, session, project.id, project.name)
    tables: list[TableInput] = []
    allowed: list[str] = []
    filesystems: list[Any] = []
    inputs: list[FileSet] = []
    bytes_in = 0
    notes = []
    for src in body.srcs:
        if src.type == SrcType.DataSource:
            ds = session.scalars(
                select(DataSourceRow).where(
                    DataSourceRow.project_id == project.id, DataSourceRow.name == src.name
                )
            ).first()
            if ds is None:
                raise DatamillError(
                    E.DATASOURCE_NOT_FOUND, f"data source '{src.name}' does not exist"
                )
            spec = _src_spec(ds, src)
            files = reader.files(ds.type, spec, run.batch_time, resolver)
            allowed += files.urls
            filesystems += files.filesystems
            inputs.append(files)
            stamp = None if files.filesystems else _stamp(files.urls)
            bytes_in += sum(size for _, _, size in stamp) if stamp else _sizes(files.urls)
            notes.append(f"{src.tableName}: data source '{src.name}', {len(files.urls)} files")
            tables.append(
                TableInput(
                    src.tableName,
                    [SchemaField.model_validate(f) for f in ds.schema],
                    files=files.urls,
                    fmt=spec,
                    stamp=stamp,
                )
            )
        else:
            upstream = get_job_row(session, project.id, src.name)
            parts = [
                str(p)
                for p in _upstream_result(runtime, session, project.name, upstream, run.batch_time)
            ]
            allowed += parts
            bytes_in += _sizes(parts)
            notes.append(f"{src.tableName}: job '{src.name}', {len(parts)} result files")
            tables.append(
                TableInput(
                    src.tableName,
                    [SchemaField.model_validate(f) for f in upstream.schema],
                    files=parts,
                )
            )
    container = effective(session, job).container
    limits = Limits(
        memory_limit=f"{container.memory_gb}GB",
        threads=max(1, min(container.units * container.count, os.cpu_count() or 1)),
        max_temp_size=f"{max(10, container.memory_gb * 4)}GB",
    )
    sandbox = Sandbox(
        temp_dir=run_dir / "tmp",
        allowed_paths=allowed,
        allowed_dirs=[staging],
        filesystems=filesystems,
        limits=limits,
    )
    target = warehouse(runtime, project.name, job.name) / batch_key(run.batch_time)
    if engine.endpoint is not None:
        notes.append(f"engine: {engine.engine.type} at {engine.endpoint.url} ('{body.engine}')")
    return PreparedRun(
        engine=engine.engine.type,
        endpoint=engine.endpoint,
        sql=sql,
        tables=tables,
        sandbox=sandbox,
        staging=staging,
        target=target,
        bytes_in=bytes_in,
        notes=notes,
        inputs=inputs,
    )


def _stamp(paths: list[str]) -> FileStamp | None:
    """The stamp of local files; None when one cannot be read."""
    stamp = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        stamp.append((path, stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


def _sizes(paths: list[str]) -> int:
    return sum(_size(p) for p in paths)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _upstream_result(
    runtime: Runtime, session: Session, project: str, upstream: JobRow, batch_time: datetime
) -> list[Path]:
    """The upstream job's result for this batch, else its latest successful result."""
    same_batch = warehouse(runtime, project, upstream.name) / batch_key(batch_time)
    folder: Path | None = same_batch if same_batch.is_dir() else None
    if folder is None:
        latest = session.scalars(
            select(RunRow.result_path)
            .where(
                RunRow.job_id == upstream.id,
                RunRow.status == "Successful",
                RunRow.result_path.is_not(None),
            )
            .order_by(RunRow.batch_time.desc())
        ).first()
        folder = Path(latest) if latest else None
    return sorted(folder.glob("*.parquet")) if folder and folder.is_dir() else []
