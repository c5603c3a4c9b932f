"""A batch session on a locked-down DuckDB connection: sources as views, results as Parquet."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
from sqlglot import exp

from datamill.domain.datasources import FormatSpec, SchemaField
from datamill.engines.base import (
    FileStamp,
    Interrupted,
    OutOfMemory,
    OutputColumn,
    QueryFailed,
    Sandbox,
    TableInput,
    WriteResult,
)
from datamill.engines.duckdb.formats import read_sql, results_expr, typed_select
from datamill.engines.duckdb.schema import (
    column_types,
    create_empty_table,
    describe,
    output_columns,
    valtype_of,
)
from datamill.engines.duckdb.session import connect_locked
from datamill.engines.duckdb.sql import QUERY, Template, around_query, literal, quoted, render
from datamill.engines.duckdb.values import fetch_rows, friendly_error, locate_duckdb_error

SelectKey = tuple[str, bool | None, str | None, FileStamp, tuple[tuple[str, str], ...]]
_SELECTS: OrderedDict[SelectKey, str] = OrderedDict()
SELECTS_CACHED = 256


def _typed_files(con: duckdb.DuckDBPyConnection, source: TableInput, fmt: FormatSpec) -> str:
    files_sql = read_sql(fmt, source.files)
    return typed_select(files_sql, source.schema, column_types(con, files_sql))


def typed_files(con: duckdb.DuckDBPyConnection, source: TableInput, fmt: FormatSpec) -> str:
    """The query reading ``source``'s files in its schema's types; remembered per process
    for unchanged local files.

    Building it means describing the files (for CSV: sniffing them); a job that runs again
    and again over the same files need not pay that each time. Remote files (no stamp) are
    always described.
    """
    if source.stamp is None:
        return _typed_files(con, source, fmt)
    schema = tuple((f.key, str(f.valtype)) for f in source.schema)
    key = (str(fmt.fileType), fmt.containsHeader, fmt.delimiter, source.stamp, schema)
    found = _SELECTS.get(key)
    if found is None:
        found = _SELECTS[key] = _typed_files(con, source, fmt)
        while len(_SELECTS) > SELECTS_CACHED:
            _SELECTS.popitem(last=False)
    else:
        _SELECTS.move_to_end(key)
    return found


def _located(exc: duckdb.Error) -> str:
    return locate_duckdb_error(str(exc))


@contextmanager
def _translated(message: Callable[[duckdb.Error], str]) -> Iterator[None]:
    """DuckDB's exceptions as the engine interface's."""
    try:
        yield
    except duckdb.InterruptException:
        raise Interrupted from None
    except duckdb.OutOfMemoryException as exc:
        raise OutOfMemory(friendly_error(exc)) from None
    except duckdb.Error as exc:
        raise QueryFailed(message(exc)) from None


def _rows_scanned(node: dict[str, Any]) -> int:
    own = 0
    if "SCAN" in str(node.get("type", "")):
        own = int(node.get("rows_scanned") or node.get("intermediate_rows") or 0)
    return own + sum(_rows_scanned(child) for child in node.get("children", []))


_PARQUET = [
    exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("parquet")),
    exp.CopyParameter(this=exp.var("COMPRESSION"), expression=exp.var("zstd")),
]
_RESULTS = Template(exp.select("*").from_(QUERY))


class DuckDBSession:
    """One locked-down connection; see :class:`datamill.engines.base.BatchSession`."""

    def __init__(self, sandbox: Sandbox, *, profiling: bool = False) -> None:
        self.profiling = profiling
        self.con = connect_locked(sandbox, profiling=profiling)

    def __enter__(self) -> DuckDBSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.con.close()

    def infer(self, fmt: FormatSpec, files: Sequence[str]) -> list[SchemaField]:
        with _translated(friendly_error):
            return describe(self.con, read_sql(fmt, files))

    def _select(self, source: TableInput) -> str | None:
        """The query reading ``source`` in its schema's types; None when it has no files."""
        if not source.files:
            return None
        if source.fmt is None:
            return _RESULTS.fill(render(results_expr(source.files)))
        return typed_files(self.con, source, source.fmt)

    def preview(self, source: TableInput, limit: int) -> list[dict[str, Any]]:
        with _translated(friendly_error):
            select = self._select(source)
            return [] if select is None else fetch_rows(self.con, select, limit)

    def add_table(self, source: TableInput) -> None:
        with _translated(_located):
            select = self._select(source)
            if select is None:
                create_empty_table(self.con, source.table, source.schema)
                return
            view = exp.Create(
                kind="VIEW", this=exp.Table(this=quoted(source.table)), expression=QUERY
            )
            self.con.execute(around_query(view, select))

    def describe(self, sql: str) -> list[OutputColumn]:
        with _translated(_located):
            columns = output_columns(self.con, sql)
        return [OutputColumn(name, valtype_of(kind)) for name, kind in columns]

    def write(self, sql: str, folder: Path) -> WriteResult:
        target = literal(str(folder / "part-0.parquet"))
        copy = exp.Copy(this=exp.Subquery(this=QUERY), kind=False, files=[target], params=_PARQUET)
        with _translated(_located):
            row = self.con.execute(around_query(copy, f"\n{sql}\n")).fetchone()
            profile = (
                json.loads(self.con.get_profiling_information(format="json"))
                if self.profiling
                else {}
            )
        operators = profile.get("operator", [])
        bytes_read = int(profile.get("io", {}).get("total_bytes_read") or 0)
        return WriteResult(
            rows_written=int(row[0]) if row else 0,
            rows_read=sum(_rows_scanned(node) for node in operators) if operators else None,
            bytes_read=bytes_read or None,
        )

    def interrupt(self) -> None:
        self.con.interrupt()
