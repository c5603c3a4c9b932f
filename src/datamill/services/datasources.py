"""Data sources: create, update, read, delete; schema inference and preview on an engine.

Stream connections (``mqtt``, ``kafka``, ``notification``, ``function``) are data sources
too: same names, same secrets, same API. They have no files and no schema, so inference
and preview refuse them; :func:`stream_connection` resolves one for the streaming engine.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill import engines
from datamill.connectors.files import FILE_SOURCES, FileSet, SourceContext
from datamill.connectors.outbound.errors import first_line
from datamill.connectors.streams.base import StreamConnection
from datamill.domain.common import DEFAULT_ENGINE, Page, PageOf, aware, validation_failure
from datamill.domain.datasources import (
    DataSource,
    DataSourceCreate,
    DataSourceUpdate,
    FileSpec,
    FormatSpec,
    Preview,
    S3Spec,
    SchemaField,
    SchemaRequest,
    StreamSpec,
    is_stream_type,
    parse_spec,
    parse_stream_spec,
    schema_changes,
)
from datamill.domain.streaming import OPERATORS
from datamill.domain.variables import Resolver
from datamill.engines.base import BatchSession, Limits, QueryFailed, Sandbox, TableInput
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_targets
from datamill.services.access import ProjectAccess
from datamill.services.data_roots import check_paths, project_roots
from datamill.services.runtime import Runtime
from datamill.services.secrets import secret_values
from datamill.services.variables import load_resolver
from datamill.store.base import fetch_page, utcnow
from datamill.store.datasources import DataSourceRow
from datamill.store.streaming import StreamingJobRow

DependantFinder = Callable[[Session, int, str], list[str]]
DEPENDANTS: list[DependantFinder] = []
"""Functions naming the resources that read a data source; a delete is refused while any do.

Resource modules that read data sources (batch jobs) register themselves here.
"""


def _out(row: DataSourceRow) -> DataSource:
    return DataSource(
        name=row.name,
        type=row.type,
        region=row.region,
        spec=row.spec,
        noVerifySchema=row.no_verify_schema,
        schema_=[SchemaField.model_validate(f) for f in row.schema],
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def _row(session: Session, project_id: int, name: str) -> DataSourceRow:
    row = session.scalars(
        select(DataSourceRow).where(
            DataSourceRow.project_id == project_id, DataSourceRow.name == name
        )
    ).first()
    if row is None:
        raise DatamillError(E.DATASOURCE_NOT_FOUND, f"data source '{name}' does not exist")
    return row


def _typed_spec(type_: str, spec: dict[str, Any]) -> FormatSpec:
    try:
        return parse_spec(type_, spec)
    except ValidationError as exc:
        raise validation_failure(exc, prefix="spec") from None


def _secret_name(spec: FormatSpec | StreamSpec) -> str | None:
    if isinstance(spec, StreamSpec):
        return spec.secret_name()
    return spec.secret if isinstance(spec, S3Spec) else None


def _stream_spec(type_: str, spec: dict[str, Any]) -> StreamSpec:
    try:
        return parse_stream_spec(type_, spec)
    except ValidationError as exc:
        raise validation_failure(exc, prefix="spec") from None


def _secret_field(spec: StreamSpec) -> str:
    """The spec field naming the secret (for error messages)."""
    return "spec.tokenSecret" if hasattr(spec, "tokenSecret") else "spec.passwordSecret"


def _no_files(type_: str, what: str) -> DatamillError:
    return DatamillError(
        E.NOT_A_FILE_SOURCE,
        f"type: a {type_} data source is a stream connection: it has no files, so {what} "
        "does not apply (streaming pipelines name it in dataSourceId)",
        field="type",
    )


def _checked_stream_spec(
    runtime: Runtime, session: Session, project_id: int, type_: str, spec: dict[str, Any]
) -> StreamSpec:
    """The typed spec, its secret present and every host it opens allowed (SSRF guard)."""
    typed = _stream_spec(type_, spec)
    secret = typed.secret_name()
    if secret:
        secret_values(runtime, session, project_id, secret, _secret_field(typed))
    check_targets(typed.outbound_targets(), runtime.settings.outbound_allow)
    return typed


def _dump(spec: FormatSpec | StreamSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_none=True, by_alias=True)


class SourceReader:
    """Lists a data source's files and reads them in a sandboxed session of the default engine."""

    def __init__(
        self, runtime: Runtime, session: Session, project_id: int, project_name: str
    ) -> None:
        self.runtime = runtime
        self.session = session
        self.project_id = project_id
        self.project_name = project_name

    @classmethod
    def of(cls, runtime: Runtime, session: Session, access: ProjectAccess) -> SourceReader:
        return cls(runtime, session, access.project_id, access.project.name)

    def files(
        self, type_: str, spec: FormatSpec, at: datetime, resolver: Resolver | None = None
    ) -> FileSet:
        """The files of a data source for the batch at ``at`` (fileFilter expanded)."""
        settings = self.runtime.settings
        secret = _secret_name(spec)
        values = (
            secret_values(self.runtime, self.session, self.project_id, secret, "spec.secret")
            if secret
            else {}
        )
        file_filter = ""
        if spec.fileFilter:
            resolver = resolver or load_resolver(self.session, self.project_id, at)
            file_filter = resolver.expand(spec.fileFilter, "spec.fileFilter")
        ctx = SourceContext(
            data_roots=project_roots(
                self.runtime, self.session, self.project_id, self.project_name
            ),
            outbound_allow=settings.outbound_allow,
            secret_values=values,
            file_filter=file_filter,
        )
        return FILE_SOURCES[type_].list_files(spec, ctx)

    def check_paths(self, spec: FormatSpec) -> None:
        """Refuse local paths that leave what the project sees of its data root, at save."""
        if isinstance(spec, FileSpec):
            views = project_roots(self.runtime, self.session, self.project_id, self.project_name)
            check_paths(
                views, spec.root, [(f"spec.paths[{i}]", p) for i, p in enumerate(spec.paths)]
            )

    @contextmanager
    def engine_session(self, files: FileSet) -> Iterator[BatchSession]:
        """A small session of the default engine that may read exactly ``files``."""
        temp = self.runtime.settings.projects_dir / self.project_name / "tmp"
        temp = temp / uuid.uuid4().hex
        sandbox = Sandbox(
            temp_dir=temp,
            allowed_paths=files.urls,
            filesystems=files.filesystems,
            limits=Limits(memory_limit="512MB", threads=1, max_temp_size="1GB"),
        )
        try:
            with engines.get(DEFAULT_ENGINE).session(sandbox) as session:
                yield session
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def _sample(self, type_: str, spec: FormatSpec, at: datetime) -> FileSet:
        files = self.files(type_, spec, at)
        if not files.urls:
            raise DatamillError(
                E.SCHEMA_INFERENCE_FAILED,
                "spec: no files match the data source's paths or prefixes"
                + (" with its fileFilter" if spec.fileFilter else ""),
                field="spec",
            )
        return files

    def infer(self, type_: str, spec: FormatSpec, at: datetime) -> list[SchemaField]:
        files = self._sample(type_, spec, at)
        files.urls = files.urls[: self.runtime.settings.inference_sample_files]
        with self.engine_session(files) as session:
            try:
                return session.infer(spec, files.urls)
            except QueryFailed as exc:
                raise DatamillError(
                    E.SCHEMA_INFERENCE_FAILED,
                    f"spec: the files cannot be read as {spec.fileType}: "
                    + _read_failure(files, exc),
                    field="spec.fileType",
                ) from None

    def preview(
        self, type_: str, spec: FormatSpec, schema: list[SchemaField], at: datetime, limit: int
    ) -> Preview:
        files = self._sample(type_, spec, at)
        source = TableInput("preview", schema, files=files.urls, fmt=spec)
        with self.engine_session(files) as session:
            try:
                rows = session.preview(source, limit)
            except QueryFailed as exc:
                raise DatamillError(
                    E.DATA_UNREADABLE, f"the data cannot be read: {_read_failure(files, exc)}"
                ) from None
        return Preview(schema_=schema, rows=rows, files=len(files.urls))


def _read_failure(files: FileSet, exc: QueryFailed) -> str:
    """Why reading ``files`` failed: what their filesystem knows, else the engine's message.
    An outbound refusal behind the failure is raised as it is (E18118)."""
    error = files.read_error()
    if isinstance(error, DatamillError):
        raise error from None
    return exc.message if error is None else first_line(error, 300)


def _verified_schema(
    inferred: list[SchemaField], given: list[SchemaField] | None
) -> list[SchemaField]:
    """The inferred schema, checked against and annotated by a schema the user gave."""
    if not given:
        return inferred
    by_key = {f.key: f for f in inferred}
    for i, field in enumerate(given):
        found = by_key.get(field.key)
        if found is None:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"schema[{i}].key: field '{field.key}' is not in the data "
                f"(found: {', '.join(by_key) or 'nothing'})",
                field=f"schema[{i}].key",
            )
        if found.valtype != field.valtype:
            raise DatamillError(
                E.INVALID_FIELD_FORMAT,
                f"schema[{i}].valtype: field '{field.key}' is {found.valtype} in the data, "
                f"not {field.valtype}",
                field=f"schema[{i}].valtype",
            )
        by_key[field.key] = found.model_copy(update={"required": field.required})
    return list(by_key.values())


def _create_stream_connection(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: DataSourceCreate
) -> DataSource:
    spec = _checked_stream_spec(runtime, session, access.project_id, body.type, body.spec)
    row = DataSourceRow(
        project_id=access.project_id,
        name=name,
        type=body.type,
        region=body.region,
        spec=_dump(spec),
        schema=[],
        no_verify_schema=body.noVerifySchema,
        secret_name=spec.secret_name(),
    )
    return _insert(session, row, name)


def _insert(session: Session, row: DataSourceRow, name: str) -> DataSource:
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.DATASOURCE_EXISTS, f"data source '{name}' already exists") from None
    return _out(row)


def create_datasource(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: DataSourceCreate
) -> DataSource:
    if is_stream_type(body.type):
        return _create_stream_connection(runtime, session, access, name, body)
    spec = _typed_spec(body.type, body.spec)
    check_targets(spec.outbound_targets(), runtime.settings.outbound_allow)
    reader = SourceReader.of(runtime, session, access)
    reader.check_paths(spec)
    if body.noVerifySchema:
        if spec.fileFilter:
            load_resolver(session, access.project_id, utcnow()).check(
                spec.fileFilter, "spec.fileFilter"
            )
        if _secret_name(spec):
            secret_values(
                runtime, session, access.project_id, _secret_name(spec) or "", "spec.secret"
            )
        schema = list(body.schema_ or [])
    else:
        schema = _verified_schema(reader.infer(body.type, spec, utcnow()), body.schema_)
    row = DataSourceRow(
        project_id=access.project_id,
        name=name,
        type=body.type,
        region=body.region,
        spec=spec.model_dump(mode="json", exclude_none=True),
        schema=[f.model_dump(mode="json") for f in schema],
        no_verify_schema=body.noVerifySchema,
        secret_name=_secret_name(spec),
    )
    return _insert(session, row, name)


def update_datasource(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str, body: DataSourceUpdate
) -> DataSource:
    """Replace the spec; the schema may gain fields but never lose or retype one."""
    row = _row(session, access.project_id, name)
    if is_stream_type(row.type):
        if body.schema_:
            raise DatamillError(
                E.NOT_A_FILE_SOURCE,
                f"schema: a {row.type} connection has no schema; a streaming pipeline "
                "declares its records' fields in its source operator",
                field="schema",
            )
        stream_spec = _checked_stream_spec(runtime, session, access.project_id, row.type, body.spec)
        row.spec = _dump(stream_spec)
        row.secret_name = stream_spec.secret_name()
        row.updated_at = utcnow()
        session.commit()
        return _out(row)
    spec = _typed_spec(row.type, body.spec)
    check_targets(spec.outbound_targets(), runtime.settings.outbound_allow)
    reader = SourceReader.of(runtime, session, access)
    reader.check_paths(spec)
    old = [SchemaField.model_validate(f) for f in row.schema]
    if row.no_verify_schema:
        if _secret_name(spec):
            secret_values(
                runtime, session, access.project_id, _secret_name(spec) or "", "spec.secret"
            )
        new = list(body.schema_) if body.schema_ is not None else old
    else:
        new = _verified_schema(reader.infer(row.type, spec, utcnow()), body.schema_)
    problems = schema_changes(old, new)
    if problems:
        raise DatamillError(
            E.SCHEMA_CHANGE_REFUSED, "schema: " + "; ".join(problems), field="schema"
        )
    row.spec = spec.model_dump(mode="json", exclude_none=True)
    row.schema = [f.model_dump(mode="json") for f in new]
    row.secret_name = _secret_name(spec)
    row.updated_at = utcnow()
    session.commit()
    return _out(row)


def get_datasource(session: Session, access: ProjectAccess, name: str) -> DataSource:
    return _out(_row(session, access.project_id, name))


def list_datasources(
    session: Session, access: ProjectAccess, page: Page, sort_by: str
) -> PageOf[DataSource]:
    columns = {
        "name": DataSourceRow.name,
        "createdAt": DataSourceRow.created_at,
        "updatedAt": DataSourceRow.updated_at,
    }
    key = sort_by.removeprefix("-")
    if key not in columns:
        raise DatamillError(
            E.INVALID_PARAMETER,
            f"sortBy: '{sort_by}' is not sortable; use one of {', '.join(columns)} "
            "(prefix '-' for descending)",
            field="sortBy",
        )
    order = columns[key].desc() if sort_by.startswith("-") else columns[key].asc()
    stmt = select(DataSourceRow).where(DataSourceRow.project_id == access.project_id)
    total, rows = fetch_page(
        session, stmt.order_by(order, DataSourceRow.id), page.offset, page.size
    )
    return PageOf[DataSource](
        total=total, page=page.page, size=page.size, items=[_out(r) for r in rows]
    )


def delete_datasource(session: Session, access: ProjectAccess, name: str) -> None:
    row = _row(session, access.project_id, name)
    dependants = [d for finder in DEPENDANTS for d in finder(session, access.project_id, name)]
    if dependants:
        raise DatamillError(
            E.HAS_DEPENDANTS,
            f"data source '{name}' is read by {', '.join(sorted(dependants))}; delete or "
            "change them first",
        )
    session.delete(row)
    session.commit()


def infer_schema(
    runtime: Runtime, session: Session, access: ProjectAccess, body: SchemaRequest
) -> list[SchemaField]:
    if is_stream_type(body.type):
        raise _no_files(body.type, "schema inference")
    spec = _typed_spec(body.type, body.spec)
    return SourceReader.of(runtime, session, access).infer(body.type, spec, utcnow())


def preview_datasource(
    runtime: Runtime,
    session: Session,
    access: ProjectAccess,
    name: str,
    limit: int,
    at: datetime | None,
) -> Preview:
    row = _row(session, access.project_id, name)
    if is_stream_type(row.type):
        raise _no_files(row.type, "preview")
    spec = _typed_spec(row.type, row.spec)
    schema = [SchemaField.model_validate(f) for f in row.schema]
    limit = min(limit, runtime.settings.preview_max_rows)
    return SourceReader.of(runtime, session, access).preview(
        row.type, spec, schema, aware(at) if at else utcnow(), limit
    )


def resolve_stream_connection(
    runtime: Runtime, session: Session, project_id: int, name: str, field: str = "dataSourceId"
) -> StreamConnection:
    """The stream connection ``name`` of a project, its secret's values decrypted.

    For processes without a caller (pipeline workers); :func:`stream_connection` is the same
    for a caller's :class:`ProjectAccess`. The spec is re-validated; the connectors check
    the hosts against the outbound guard again when they connect.
    """
    row = session.scalars(
        select(DataSourceRow).where(
            DataSourceRow.project_id == project_id, DataSourceRow.name == name
        )
    ).first()
    if row is None:
        raise DatamillError(
            E.DATASOURCE_NOT_FOUND, f"{field}: data source '{name}' does not exist", field=field
        )
    if not is_stream_type(row.type):
        raise DatamillError(
            E.NOT_A_STREAM_CONNECTION,
            f"{field}: data source '{name}' is a {row.type} data source, not a stream "
            "connection (mqtt, kafka, notification or function)",
            field=field,
        )
    spec = _stream_spec(row.type, row.spec)
    secret = spec.secret_name()
    values = (
        secret_values(runtime, session, project_id, secret, f"{name}: {_secret_field(spec)}")
        if secret
        else {}
    )
    return StreamConnection(name=row.name, type=row.type, spec=_dump(spec), secret_values=values)


def stream_connection(
    runtime: Runtime, session: Session, access: ProjectAccess, name: str
) -> StreamConnection:
    """The stream connection an operator names in ``dataSourceId``, ready for a connector:
    its spec as a dict and its secret's values decrypted (never put these in a response).

    Raises E18102 when it does not exist and E18121 when it is a file data source.
    """
    return resolve_stream_connection(runtime, session, access.project_id, name)


def _data_source_ids(operators: list[Any]) -> list[tuple[str, str, str]]:
    """``(operator id, className, dataSourceId)`` of the operators naming a connection."""
    found = []
    for op in operators:
        if not isinstance(op, dict):
            continue
        configs = op.get("configs")
        basic = configs.get("basicConfigs") if isinstance(configs, dict) else None
        name = basic.get("dataSourceId") if isinstance(basic, dict) else None
        if isinstance(name, str) and name.strip():
            found.append((str(op.get("id")), str(op.get("className")), name.strip()))
    return found


def stream_connection_problems(
    session: Session, project_id: int, operators: list[Any]
) -> dict[str, list[str]]:
    """For a streaming job's check: operator id → problems with the connection it names
    in ``configs.basicConfigs.dataSourceId`` (missing, or of a type the operator cannot
    use), in the ``check_info`` style. ``operators`` are ``operatorInstances`` as dicts."""
    problems: dict[str, list[str]] = {}
    path = "configs.basicConfigs.dataSourceId"
    for op_id, class_name, name in _data_source_ids(operators):
        row = session.scalars(
            select(DataSourceRow).where(
                DataSourceRow.project_id == project_id, DataSourceRow.name == name
            )
        ).first()
        kind = OPERATORS.get(class_name)
        wanted = (kind.connection_types if kind is not None else None) or None
        if row is None:
            problem = f"{path}: data source '{name[:128]}' does not exist"
        elif wanted is not None and row.type not in wanted:
            problem = (
                f"{path}: '{name}' is a {row.type} data source; {class_name} uses "
                f"{' or '.join(wanted)} connections"
            )
        else:
            continue
        problems.setdefault(op_id, []).append(problem)
    return problems


def _streaming_jobs_naming(session: Session, project_id: int, name: str) -> list[str]:
    rows = session.scalars(
        select(StreamingJobRow).where(StreamingJobRow.project_id == project_id)
    ).all()
    return [
        f"streaming job '{row.name}' ({row.job_id})"
        for row in rows
        if any(
            ds == name
            for _op, _cls, ds in _data_source_ids(row.body.get("operatorInstances") or [])
        )
    ]


DEPENDANTS.append(_streaming_jobs_naming)
