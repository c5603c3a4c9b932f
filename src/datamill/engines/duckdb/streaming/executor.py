"""DuckDB's micro-batch executor: one job's batches as SQL over its state database.

A relation is a SQL table expression: a parenthesised query (stateless chains are fused
into one query per batch), a TEMP table, or a registered Arrow table. JSON lines are
parsed by DuckDB, not Python. Every TEMP table and registration of a batch is dropped by
:meth:`DuckDBExecutor.end_batch`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa
from sqlglot import exp

from datamill.domain.expressions import FieldType
from datamill.domain.streaming import Schema
from datamill.engines.duckdb import Limits, Sandbox, connect_locked, identifier
from datamill.engines.duckdb.sql import literal, quoted
from datamill.engines.duckdb.streaming.render import (
    DUCKDB_TYPES,
    Render,
    arrow_sql,
    describe_structure,
    json_lines_sql,
    sql,
    template,
)
from datamill.engines.duckdb.streaming.state import STATE_FILE, DuckDBStateStore, StatefulStep
from datamill.engines.streaming import BatchContext, Relation, SourceBatch


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json(value: exp.Expr) -> exp.Expr:
    return exp.TryCast(this=value, to=exp.DataType.build("JSON"))


_ALL = template(lambda rel: exp.select("*").from_(rel))
_COUNT = template(lambda rel: exp.select(exp.Count(this=exp.Star())).from_(rel))
_STRUCTURE = template(
    lambda rel: exp.select(exp.func("json_group_structure", _json(exp.column("line")))).from_(rel)
)
_LINES = template(
    lambda rel: exp.Subquery(
        this=exp.select(exp.alias_(_json(exp.column("line")), "line")).from_(rel)
    )
)
_DROP = template(lambda table: exp.Drop(kind="TABLE", exists=True, tables=[table]))
_PARQUET = [
    exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("parquet")),
    exp.CopyParameter(this=exp.var("COMPRESSION"), expression=exp.var("zstd")),
]


def _union_by_name() -> str:
    """What stands between two queries of a ``UNION ALL BY NAME``, as DuckDB spells it."""
    first, second = (exp.select("*").from_(exp.Table(this=quoted(n))) for n in ("a", "b"))
    union = exp.union(first, second, distinct=False)
    union.set("by_name", True)
    text = sql(union)
    return text[len(sql(first)) : text.index(sql(second))]


_UNION_BY_NAME = _union_by_name()


@lru_cache(maxsize=1024)
def _create_temp(name: str) -> Render:
    """``CREATE OR REPLACE TEMP TABLE name AS`` a query: the same names recur every batch."""
    return template(
        lambda query: exp.Create(
            this=exp.Table(this=quoted(name)),
            kind="TABLE",
            replace=True,
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
            expression=query,
        )
    )


@lru_cache(maxsize=1024)
def _max_of(field_name: str) -> Render:
    return template(lambda rel: exp.select(exp.Max(this=exp.column(quoted(field_name)))).from_(rel))


def _copy_parquet(path: str) -> Render:
    return template(
        lambda rel: exp.Copy(
            this=exp.Subquery(this=exp.select("*").from_(rel)),
            kind=False,
            files=[literal(path)],
            params=_PARQUET,
        )
    )


class DuckDBExecutor:
    """A :class:`~datamill.engines.streaming.MicroBatchExecutor` on one connection.

    Relations are SQL text (a quoted temp table or a parenthesized query) that the plan's
    renderers produce; the statements around them are sqlglot trees rendered once."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._temp: list[str] = []
        self._registered: list[str] = []

    def _register(self, table: pa.Table) -> str:
        name = f"__raw_{len(self._registered)}"
        self.con.register(name, table)
        self._registered.append(name)
        return name

    def _temp_table(self, name: str, sql: str) -> str:
        self.con.execute(_create_temp(name)(sql))
        ref = identifier(name)
        self._temp.append(ref)
        return ref

    def load(self, op_id: str, schema: Schema, data: SourceBatch) -> Relation | None:
        undeclared = schema.open and not schema.fields
        if isinstance(data, pa.Table):
            if data.num_rows == 0 and undeclared:
                return None
            raw = self._register(data)
            return "(" + arrow_sql(identifier(raw), schema, data.schema) + ")"
        if data.count == 0 and undeclared:
            return None
        lines = data.data.decode("utf-8", errors="replace").split("\n")[: data.count]
        raw = identifier(self._register(pa.table({"line": pa.array(lines, pa.string())})))
        structure = None
        if undeclared:
            found = self.con.execute(_STRUCTURE(raw)).fetchall()
            structure = describe_structure(found[0][0] if found else None)
        # a line that is not JSON (a connector's odd message) gives a record of NULLs
        return self._temp_table(f"__src_{op_id}", json_lines_sql(_LINES(raw), schema, structure))

    def empty(self, op_id: str, schema: Schema) -> Relation:
        columns = [
            exp.alias_(
                exp.cast(
                    exp.null(), DUCKDB_TYPES[kind] if isinstance(kind, FieldType) else "VARCHAR"
                ),
                quoted(name),
            )
            for name, kind in schema.fields.items()
        ] or [exp.alias_(exp.null(), "_empty")]
        return self._temp_table(f"__empty_{op_id}", sql(exp.select(*columns).where(exp.false())))

    def max_time(self, relation: Relation, field_name: str) -> datetime | None:
        found = self.con.execute(_max_of(field_name)(relation)).fetchall()
        return _aware(found[0][0]) if found else None

    def union(self, relations: list[Relation]) -> Relation | None:
        if not relations:
            return None
        if len(relations) == 1:
            return relations[0]
        return "(" + _UNION_BY_NAME.join(_ALL(r) for r in relations) + ")"

    def sql(self, render: Callable[[Relation], str], relation: Relation) -> Relation:
        return "(" + render(relation) + ")"

    def materialize(self, op_id: str, relation: Relation) -> Relation:
        return self._temp_table(f"__op_{op_id}", _ALL(relation))

    def count(self, relation: Relation) -> int:
        rows = self.con.execute(_COUNT(relation)).fetchall()
        return int(rows[0][0]) if rows else 0

    def stateful(
        self, op_id: str, step: Any, relation: Relation, ctx: BatchContext
    ) -> tuple[Relation, int]:
        # a step reads a table: its rowid is the records' arrival order
        table = self._temp_table(f"__in_{op_id}", _ALL(relation))
        count_in = self.count(table)
        out = cast(StatefulStep, step).process(self.con, table, ctx)
        self._temp.append(out)
        return out, count_in

    def stateful_metrics(self, step: Any) -> dict[str, Any]:
        try:
            return cast(StatefulStep, step).metrics(self.con)
        except duckdb.Error:
            return {}

    def transform(
        self, op_id: str, apply: Callable[[pa.Table], pa.Table], relation: Relation
    ) -> Relation:
        table = self.con.sql(_ALL(relation)).to_arrow_table()
        result = apply(table) if table.num_rows else table
        name = f"__fn_{op_id}"
        self.con.register(name, result)
        self._registered.append(name)
        return identifier(name)

    def write(self, sink: Any, relation: Relation, epoch: int) -> int:
        if getattr(sink, "copy_format", None) == "PARQUET":
            path = sink.stage_file(epoch)
            rows = self.con.execute(_copy_parquet(str(path))(relation)).fetchall()
            count = int(rows[0][0]) if rows else 0
            sink.staged(path, count)
            return count
        table = self.con.sql(_ALL(relation)).to_arrow_table()
        if table.num_rows:
            sink.write(table, epoch)
        return int(table.num_rows)

    def end_batch(self) -> None:
        for ref in reversed(self._temp):
            with contextlib.suppress(duckdb.Error):
                self.con.execute(_DROP(ref))
        for name in self._registered:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(name)
        self._temp.clear()
        self._registered.clear()


def open_job(
    job_dir: Path,
    *,
    memory_limit: str,
    threads: int,
    steps: Sequence[Any],
) -> tuple[DuckDBExecutor, DuckDBStateStore]:
    """The executor and state store of one job, on one locked-down connection to the
    job's state database; the stateful ``steps`` get their state tables."""
    threads = max(1, min(threads, os.cpu_count() or 1))
    sandbox = Sandbox(
        temp_dir=job_dir / "tmp",
        allowed_dirs=[job_dir / "tmp", job_dir / "staging"],
        limits=Limits(memory_limit=memory_limit, threads=threads),
    )
    path = job_dir / STATE_FILE
    con = connect_locked(sandbox, database=str(path))
    store = DuckDBStateStore(con, path)
    for step in steps:
        cast(StatefulStep, step).create_state(con)
    return DuckDBExecutor(con), store
