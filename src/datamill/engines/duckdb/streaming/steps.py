"""What the stateful steps share: their state tables' names, the meta table, building
statements once, and the types and times they compute with."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
from sqlglot import exp

from datamill.domain.expressions import FieldType, ValueType
from datamill.engines.duckdb.streaming.render import DUCKDB_TYPES
from datamill.engines.duckdb.streaming.sql import (
    Statement,
    col,
    fill,
    parse,
    table,
)
from datamill.engines.streaming import BatchContext

US = 1_000_000
"""Microseconds per second: windows are computed on ``epoch_us`` integers."""

Values = dict[str, Any]
"""A batch's parameters: ``now`` (processing time), ``now_us``, ``batch`` (the step's
batch number), ``prev`` (the previous watermark in µs), ``close_at`` (windows ending by
it close), ``watermark`` and ``horizon``."""


def duckdb_type(kind: ValueType) -> str | None:
    """The DuckDB type holding a field of ``kind``; None for an unknown type."""
    return DUCKDB_TYPES.get(kind) if isinstance(kind, FieldType) else None


def state_prefix(operator_id: str) -> str:
    """The prefix of a step's table names: the id made an identifier, plus a hash of it
    so that ``a.b`` and ``a_b`` never share tables."""
    digest = hashlib.sha256(operator_id.encode()).hexdigest()[:8]
    return f"dm_{re.sub(r'[^A-Za-z0-9_]', '_', operator_id)}_{digest}"


def source_table(name: str) -> exp.Table:
    """The table a step reads: a plain or dotted name, or one already quoted."""
    ref = exp.to_table(name, dialect="duckdb")
    for part in ref.parts:
        part.set("quoted", True)
    return ref


def utc_naive(value: datetime) -> datetime:
    """An aware datetime as the naive UTC value DuckDB's TIMESTAMP holds (naive = UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def us_of(value: datetime) -> int:
    """Microseconds since the epoch of a (naive = UTC) datetime."""
    delta = utc_naive(value) - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def alias(expression: exp.Expr, name: str, *, quoted: bool = False) -> exp.Expr:
    return exp.alias_(expression, exp.to_identifier(name, quoted=quoted))


def cast(expression: exp.Expr, sql_type: str) -> exp.Expr:
    return exp.cast(expression, exp.DataType.build(sql_type, dialect="duckdb"))


def _column_type(kind: str) -> exp.DataType:
    try:
        return exp.DataType.build(kind, dialect="duckdb")
    except Exception:  # a type sqlglot does not know: passed through as written
        return exp.DataType.build(kind, udt=True)


def create_table(name: exp.Table, columns: Sequence[tuple[str, str]]) -> exp.Create:
    """``CREATE TABLE IF NOT EXISTS`` with the given (name, DuckDB type) columns."""
    return exp.Create(
        this=exp.Schema(
            this=name,
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(n, quoted=True), kind=_column_type(t))
                for n, t in columns
            ],
        ),
        kind="TABLE",
        exists=True,
    )


class Prepared:
    """A step's statements, rendered the first time each is needed and reused."""

    def __init__(self) -> None:
        self._done: dict[tuple[Any, ...], list[Statement]] = {}

    def __call__(
        self, key: tuple[Any, ...], build: Callable[[], list[exp.Expr]]
    ) -> list[Statement]:
        statements = self._done.get(key)
        if statements is None:
            statements = self._done[key] = [Statement(e) for e in build()]
        return statements

    def run(
        self,
        con: duckdb.DuckDBPyConnection,
        values: Values,
        key: tuple[Any, ...],
        build: Callable[[], list[exp.Expr]],
    ) -> None:
        for statement in self(key, build):
            statement.run(con, values)


class Meta:
    """The step's one-row table of scalars (watermark, counters): state like the rest."""

    COLUMNS = {
        "watermark": "TIMESTAMP",
        "batches": "BIGINT",
        "late_records": "BIGINT",
        "null_time_records": "BIGINT",
        "expired_state_rows": "BIGINT",
        "emitted_rows": "BIGINT",
        "dropped_duplicates": "BIGINT",
    }

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}_meta"
        self.table = table(self.name)
        zeros = [exp.null() if k == "watermark" else exp.Literal.number(0) for k in self.COLUMNS]
        self._create = [
            Statement(create_table(self.table, list(self.COLUMNS.items()))),
            Statement(
                fill(
                    "INSERT INTO $t SELECT $zeros WHERE NOT EXISTS (SELECT 1 FROM $t)",
                    t=self.table,
                    zeros=zeros,
                )
            ),
        ]
        self._read = Statement(fill("SELECT * FROM $t", t=self.table))

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        for statement in self._create:
            statement.run(con, {})

    def read(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        rows = self._read.rows(con, {})
        if not rows:
            return {name: None for name in self.COLUMNS}
        return dict(zip(self.COLUMNS, rows[0], strict=True))

    def add(self, counter: str, count: exp.Expr) -> exp.Expr:
        """Add the value of a scalar query to a counter."""
        return fill(
            "UPDATE $t SET $c = $c + coalesce(($q), 0)", t=self.table, c=col(counter), q=count
        )

    def set(self, assignments: Sequence[exp.Expr]) -> exp.Expr:
        return fill("UPDATE $t SET $sets", t=self.table, sets=list(assignments))

    def note_batch(self, batches: exp.Expr, out: exp.Table) -> exp.Expr:
        """Count the batch (``batches`` is the new count), its emitted rows (``out``) and
        its watermark."""
        return self.set(
            [
                exp.EQ(this=col("batches"), expression=batches),
                parse("watermark = greatest(watermark, CAST($watermark AS TIMESTAMP))"),
                fill("emitted_rows = emitted_rows + (SELECT count(*) FROM $out)", out=out),
            ]
        )


_ALL_EXIST = (
    "SELECT count(*) FROM duckdb_tables() WHERE NOT temporary AND list_contains(?, table_name)"
)
_EXISTS = "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary"


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The one value of a query (results are always read to the end: DuckDB refuses new
    work on a connection with a result left open)."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0][0] if rows else None


def create_like(
    con: duckdb.DuckDBPyConnection, name: exp.Table, query: exp.Expr, values: Values
) -> None:
    """``CREATE TABLE IF NOT EXISTS`` ``name`` with the columns (names and types) of
    ``query``.

    Not ``CREATE TABLE … AS … LIMIT 0``: on DuckDB 2.0 a table created that way inside a
    transaction loses the rows later appended to it in the same transaction once they
    exceed a row group (aggregates over it see nothing), which would break the first
    checkpoint of a job.
    """
    columns = Statement(exp.Describe(this=query)).rows(con, values)
    Statement(create_table(name, [(n, kind) for n, kind, *_ in columns])).run(con, {})


def all_exist(con: duckdb.DuckDBPyConnection, names: Sequence[str]) -> bool:
    """Whether every one of the state tables exists: one catalog query, so a batch does
    not re-run the creation statements."""
    found = scalar(con, _ALL_EXIST, [list(names)])
    return int(found or 0) == len(set(names))


def count_of(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Rows of a state table, 0 when it does not exist yet."""
    if not scalar(con, _EXISTS, [name]):
        return 0
    return int(Statement(fill("SELECT count(*) FROM $t", t=table(name))).rows(con, {})[0][0])


def batch_values(ctx: BatchContext, **more: Any) -> Values:
    return {
        "now": utc_naive(ctx.processing_time),
        "now_us": us_of(ctx.processing_time),
        "watermark": utc_naive(ctx.watermark) if ctx.watermark is not None else None,
        **more,
    }


NO_CONTEXT = BatchContext(epoch=0, processing_time=datetime(1970, 1, 1, tzinfo=UTC), watermark=None)
