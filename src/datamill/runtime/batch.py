"""Executing one batch run of a SQL job on a locked-down DuckDB connection.

The run's inputs are fixed before DuckDB opens: the data sources' files for the batch
(fileFilter and magic variables expanded at the batch time with the run's frozen params and
variables) and the upstream jobs' results for the same batch. The connection may read
exactly those files and write only into the run's own staging folder; the staged result is
moved into the warehouse (``warehouse/<job>/batch=<time>/``) only when the query succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import select
from sqlalchemy.orm import Session

from datamill.domain.datasources import FormatSpec, SchemaField, parse_spec
from datamill.domain.jobs import Src, SrcType
from datamill.domain.variables import Resolver, VariableIn
from datamill.engines import duckdb as engine
from datamill.errors import DatamillError, E
from datamill.security.sql_gate import gate, locate_duckdb_error
from datamill.services.datasources import SourceReader
from datamill.services.jobrefs import body_of, effective, get_job_row
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


FileStamp = tuple[tuple[str, int, int], ...]
"""Local files by path, modification time (ns) and size: the same stamp, the same files."""

_COLUMN_TYPES: OrderedDict[tuple[str, FileStamp], dict[str, str]] = OrderedDict()
COLUMN_TYPES_CACHED = 256


def _column_types(
    con: duckdb.DuckDBPyConnection, files_sql: str, stamp: FileStamp | None
) -> dict[str, str]:
    """The files' column types, remembered per worker process for unchanged local files.

    Describing a CSV file means sniffing it; a job that runs again and again over the same
    files need not pay that each time. Remote files (no stamp) are always described.
    """
    if stamp is None:
        return engine.column_types(con, files_sql)
    key = (files_sql, stamp)
    found = _COLUMN_TYPES.get(key)
    if found is None:
        found = engine.column_types(con, files_sql)
        _COLUMN_TYPES[key] = found
        while len(_COLUMN_TYPES) > COLUMN_TYPES_CACHED:
            _COLUMN_TYPES.popitem(last=False)
    else:
        _COLUMN_TYPES.move_to_end(key)
    return dict(found)


@dataclass
class SourceView:
    """How one src becomes a table in the run's connection."""

    table: str
    schema: list[SchemaField]
    files_sql: str | None = None
    parquet_sql: str | None = None
    stamp: FileStamp | None = None

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        name = engine.identifier(self.table)
        if self.files_sql is not None:
            columns = _column_types(con, self.files_sql, self.stamp)
            select_sql = engine.typed_select(self.files_sql, self.schema, columns)
            con.execute(f"CREATE VIEW {name} AS {select_sql}")
        elif self.parquet_sql is not None:
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {self.parquet_sql}")
        else:
            engine.create_empty_table(con, self.table, self.schema)


@dataclass
class PreparedRun:
    """Everything a run needs, resolved from the store before DuckDB starts."""

    sql: str
    views: list[SourceView]
    sandbox: engine.Sandbox
    staging: Path
    target: Path
    bytes_in: int
    notes: list[str] = field(default_factory=list)


class RunCanceled(Exception):
    """The run was interrupted because a stop was requested."""


class RunTimedOut(Exception):
    """The watchdog interrupted the run at its maximum run time."""


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
    sql = gate(
        resolver.expand(body.computation.code, "computation.code"), [s.tableName for s in body.srcs]
    )
    run_dir = settings.projects_dir / project.name / "runs" / f"{run.id}-{run.attempt}"
    staging = run_dir / "out"
    shutil.rmtree(run_dir, ignore_errors=True)
    staging.mkdir(parents=True)
    reader = SourceReader(runtime, session, project.id, project.name)
    views: list[SourceView] = []
    allowed: list[str] = []
    filesystems: list[Any] = []
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
            stamp = None if files.filesystems else _stamp(files.urls)
            bytes_in += sum(size for _, _, size in stamp) if stamp else _sizes(files.urls)
            notes.append(f"{src.tableName}: data source '{src.name}', {len(files.urls)} files")
            views.append(
                SourceView(
                    src.tableName,
                    [SchemaField.model_validate(f) for f in ds.schema],
                    files_sql=engine.read_sql(spec, files.urls) if files.urls else None,
                    stamp=stamp,
                )
            )
        else:
            upstream = get_job_row(session, project.id, src.name)
            parts = _upstream_result(runtime, session, project.name, upstream, run.batch_time)
            allowed += [str(p) for p in parts]
            bytes_in += sum(_size(str(p)) for p in parts)
            notes.append(f"{src.tableName}: job '{src.name}', {len(parts)} result files")
            views.append(
                SourceView(
                    src.tableName,
                    [SchemaField.model_validate(f) for f in upstream.schema],
                    parquet_sql=(
                        f"read_parquet({engine.sql_list(str(p) for p in parts)}, "
                        "hive_partitioning=false)"
                        if parts
                        else None
                    ),
                )
            )
    container = effective(session, job).container
    limits = engine.Limits(
        memory_limit=f"{container.memory_gb}GB",
        threads=max(1, min(container.units * container.count, os.cpu_count() or 1)),
        max_temp_size=f"{max(10, container.memory_gb * 4)}GB",
    )
    sandbox = engine.Sandbox(
        temp_dir=run_dir / "tmp",
        allowed_paths=allowed,
        allowed_dirs=[staging],
        filesystems=filesystems,
        limits=limits,
    )
    target = warehouse(runtime, project.name, job.name) / batch_key(run.batch_time)
    return PreparedRun(
        sql=sql,
        views=views,
        sandbox=sandbox,
        staging=staging,
        target=target,
        bytes_in=bytes_in,
        notes=notes,
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


@dataclass
class RunStats:
    rows_read: int | None
    rows_written: int
    bytes_read: int
    bytes_written: int

    def as_dict(self) -> dict[str, int | None]:
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
        }


def _rows_scanned(node: dict[str, Any]) -> int:
    own = 0
    if "SCAN" in str(node.get("type", "")):
        own = int(node.get("rows_scanned") or node.get("intermediate_rows") or 0)
    return own + sum(_rows_scanned(child) for child in node.get("children", []))


class Watchdog:
    """Interrupts a DuckDB query when a stop is requested or the deadline passes."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, stop: threading.Event, deadline: float
    ) -> None:
        self.con = con
        self.stop = stop
        self.deadline = deadline
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        import time

        while not self._done.wait(0.05):
            if self.stop.is_set():
                self.reason = "stop"
            elif time.monotonic() > self.deadline:
                self.reason = "timeout"
            else:
                continue
            self.con.interrupt()
            return


def execute(prepared: PreparedRun, stop: threading.Event, deadline: float) -> RunStats:
    """Run the query into the staging folder (:func:`publish` makes it the batch's result)."""
    con = engine.connect_locked(prepared.sandbox, profiling=True)
    try:
        with Watchdog(con, stop, deadline) as watchdog:
            try:
                for view in prepared.views:
                    view.create(con)
                out = prepared.staging / "part-0.parquet"
                row = con.execute(
                    f"COPY (\n{prepared.sql}\n) TO {engine.sql_string(str(out))} "
                    "(FORMAT parquet, COMPRESSION zstd)"
                ).fetchone()
                profile = json.loads(con.get_profiling_information(format="json"))
            except duckdb.InterruptException:
                if watchdog.reason == "timeout":
                    raise RunTimedOut from None
                raise RunCanceled from None
            except duckdb.OutOfMemoryException as exc:
                raise DatamillError(
                    E.INVALID_SQL,
                    f"the query needs more memory than the container gives "
                    f"({prepared.sandbox.limits.memory_limit}): {engine.friendly_error(exc)}",
                ) from None
            except duckdb.Error as exc:
                raise DatamillError(E.INVALID_SQL, locate_duckdb_error(str(exc))) from None
    finally:
        con.close()
    rows_written = int(row[0]) if row else 0
    io = profile.get("io", {})
    operators = profile.get("operator", [])
    rows_read = sum(_rows_scanned(node) for node in operators) if operators else None
    bytes_written = sum(p.stat().st_size for p in prepared.staging.glob("*.parquet"))
    return RunStats(
        rows_read=rows_read,
        rows_written=rows_written,
        bytes_read=int(io.get("total_bytes_read") or prepared.bytes_in),
        bytes_written=bytes_written,
    )


def publish(staging: Path, target: Path, retire_into: Path | None = None) -> None:
    """Replace ``target`` with ``staging`` so readers see the old or the new batch, whole.

    The replaced result is removed, or with ``retire_into`` moved there (a folder on the
    same file system that does not exist yet) for the caller to remove later.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        retired = retire_into or target.with_name(target.name + f".old-{os.getpid()}")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        if retire_into is None:
            shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def cleanup(prepared: PreparedRun) -> None:
    shutil.rmtree(prepared.staging.parent, ignore_errors=True)
