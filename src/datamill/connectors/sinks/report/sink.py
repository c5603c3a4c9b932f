"""The ``report`` sink (see the package's docs)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from datamill.connectors.outbound.http import redact
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    TransientSinkError,
    register,
)
from datamill.connectors.sinks.common import check_mapping, row_chunks
from datamill.connectors.sinks.report.spec import BATCH_COLUMN, ReportSpec
from datamill.domain.datasources import SchemaField
from datamill.errors import DatamillError, E
from datamill.security.outbound import OutboundTarget, check_host

_PG_OPTIONS = frozenset({"sslmode", "connect_timeout", "application_name"})
_TYPES: dict[str, Any] = {
    "boolean": sa.Boolean(),
    "long": sa.BigInteger(),
    "float": sa.Double(),
    "date": sa.DateTime(timezone=True),
    "string": sa.Text(),
}


def _engine(spec: ReportSpec, ctx: ExportContext, timeout: float) -> tuple[Engine, str]:
    """An engine for the secret's URL, connecting only where the guard allows."""
    raw = ctx.secret_values.get("url")
    if not raw:
        raise DatamillError(
            E.SECRET_KEY_MISSING,
            f"spec.secret: secret '{spec.secret}' has no value 'url' (the database's URL)",
            field="spec.secret",
        )
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise SinkError(f"secret '{spec.secret}': value 'url' is not a database URL") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        return _postgres_engine(spec, ctx, url, timeout)
    if backend == "sqlite":
        return _sqlite_engine(spec, ctx, url, timeout)
    raise SinkError(
        f"secret '{spec.secret}': database '{backend}' is not supported; use postgresql or sqlite"
    )


def _postgres_engine(
    spec: ReportSpec, ctx: ExportContext, url: URL, timeout: float
) -> tuple[Engine, str]:
    unknown = sorted(set(url.query) - _PG_OPTIONS)
    if unknown:
        raise SinkError(
            f"secret '{spec.secret}': URL option '{unknown[0]}' is not allowed "
            f"(allowed: {', '.join(sorted(_PG_OPTIONS))})"
        )
    host, port = _server(spec, url)
    address = check_host(host, port, ctx.outbound_allow, "spec.secret")
    if not url.database and spec.dbName:
        url = url.set(database=spec.dbName)
    url = url.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(
        url,
        poolclass=NullPool,
        connect_args={"hostaddr": address, "connect_timeout": max(1, math.ceil(timeout))},
    )
    return engine, f"postgresql {host}:{port}/{url.database or ''}"


def _server(spec: ReportSpec, url: URL) -> tuple[str, int]:
    """The host and port of a PostgreSQL URL, which must name one network host."""
    host = url.host or ""
    if not host or "," in host or host.startswith("/"):
        raise SinkError(f"secret '{spec.secret}': the URL needs one network host")
    return host, url.port or 5432


def _sqlite_engine(
    spec: ReportSpec, ctx: ExportContext, url: URL, timeout: float
) -> tuple[Engine, str]:
    database = url.database or ""
    if not database or database == ":memory:" or url.query:
        raise SinkError(f"secret '{spec.secret}': a sqlite URL needs a file path and no options")
    path = Path(database).resolve()
    if not any(view.contains(path) for view in ctx.data_roots.values()) or path.is_dir():
        raise DatamillError(
            E.PATH_REFUSED,
            f"spec.secret: the sqlite file '{database}' is outside the project's data roots",
            field="spec.secret",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        URL.create("sqlite", database=str(path)),
        poolclass=NullPool,
        connect_args={"timeout": timeout},
    )
    return engine, f"sqlite {path.name}"


def _value(value: Any, valtype: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if valtype == "date" and isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, dict | list):
        return str(value)
    return value


def _table_parts(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def _rows(
    spec: ReportSpec, batch: ExportBatch, stamp: dt.datetime | None
) -> Iterator[list[dict[str, Any]]]:
    types = {f.key: str(f.valtype) for f in batch.schema}
    for rows in row_chunks(batch.read(), spec.batchSize):
        out = []
        for row in rows:
            record = {
                c: _value(row.get(f), types.get(f, "string")) for c, f in spec.columns.items()
            }
            if stamp is not None:
                record[BATCH_COLUMN] = stamp
            out.append(record)
        yield out


class ReportSink:
    """Rows into a SQL table, replacing the table or the batch (module docstring)."""

    type_name: ClassVar[str] = "report"
    spec_model: ClassVar[type[BaseModel]] = ReportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, ReportSpec)
        check_mapping(spec.columns, schema, "spec.columns")

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, ReportSpec)
        return spec.secret

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        """The server of a PostgreSQL URL in the secret; a URL the write would refuse for
        other reasons (not a URL, another database, no single host) names none here."""
        assert isinstance(spec, ReportSpec)
        try:
            url = make_url(secret_values.get("url") or "")
            if url.get_backend_name() != "postgresql":
                return []
            return [(*_server(spec, url), "spec.secret")]
        except (ArgumentError, ValueError, SinkError):
            return []

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, ReportSpec)
        engine, where = _engine(spec, ctx, spec.timeoutSeconds)
        hidden = dict(ctx.secret_values)
        password = engine.url.password
        if isinstance(password, str):
            hidden["url.password"] = password
        try:
            return self._write(spec, batch, ctx, engine, where)
        except OperationalError as exc:
            if exc.connection_invalidated or _is_connect_error(exc):
                raise TransientSinkError(
                    f"cannot reach {where}: {_db_message(exc, hidden)}"
                ) from None
            raise SinkError(f"{where}: {_db_message(exc, hidden)}") from None
        except SQLAlchemyError as exc:
            raise SinkError(f"{where}: {_db_message(exc, hidden)}") from None
        finally:
            engine.dispose()

    def _write(
        self,
        spec: ReportSpec,
        batch: ExportBatch,
        ctx: ExportContext,
        engine: Engine,
        where: str,
    ) -> ExportOutcome:
        schema_name, table_name = _table_parts(spec.tableName)
        types = {f.key: str(f.valtype) for f in batch.schema}
        stamp = batch.batch_time
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        with engine.connect() as probe:
            exists = sa.inspect(probe).has_table(table_name, schema=schema_name)
        metadata = sa.MetaData()
        if exists:
            table = sa.Table(table_name, metadata, schema=schema_name, autoload_with=engine)
            present = {c.name for c in table.columns}
            missing = [c for c in spec.columns if c not in present]
            if missing:
                raise SinkError(
                    f"table '{spec.tableName}' has no column '{missing[0]}' "
                    "(add it, or drop it from spec.columns)"
                )
            has_batch = BATCH_COLUMN in present
            if spec.saveMode == "append" and not has_batch:
                raise SinkError(
                    f"table '{spec.tableName}' has no column {BATCH_COLUMN}; append mode needs "
                    "it to replace a batch that is exported again"
                )
        else:
            columns = [
                sa.Column(column, _TYPES[types.get(field, "string")])
                for column, field in spec.columns.items()
            ]
            columns.append(sa.Column(BATCH_COLUMN, sa.DateTime(timezone=True), index=True))
            table = sa.Table(table_name, metadata, *columns, schema=schema_name)
            metadata.create_all(engine, checkfirst=True)
            ctx.log(f"created table '{spec.tableName}' in {where}")
            has_batch = True

        written = 0
        with engine.begin() as conn:
            if spec.saveMode == "overwrite":
                deleted = conn.execute(sa.delete(table)).rowcount
            else:
                deleted = conn.execute(
                    sa.delete(table).where(table.c[BATCH_COLUMN] == stamp)
                ).rowcount
            for rows in _rows(spec, batch, stamp if has_batch else None):
                conn.execute(sa.insert(table), rows)
                written += len(rows)
        replaced = (
            f"replaced the table's {deleted} rows"
            if spec.saveMode == "overwrite"
            else f"replaced {deleted} rows of the same batch"
        )
        detail = (
            f"{spec.saveMode}: wrote {written} rows to '{spec.tableName}' in {where}; {replaced}"
        )
        ctx.log(detail)
        return ExportOutcome(rows=written, bytes=0, detail=detail)


def _is_connect_error(exc: OperationalError) -> bool:
    text = str(exc.orig or exc).lower()
    return any(
        needle in text
        for needle in (
            "connection refused",
            "could not connect",
            "connection failed",
            "timeout expired",
            "timed out",
            "server closed the connection",
            "database is locked",
            "terminating connection",
        )
    )


def _db_message(exc: SQLAlchemyError, secrets: Mapping[str, str]) -> str:
    """The driver's message without the SQL and parameters SQLAlchemy appends."""
    origin = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(origin).split("\n[SQL:", 1)[0].strip()
    text = " ".join(text.split())
    return redact(text, secrets)[:500]


register(ReportSink())
