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
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa

from datamill.domain.expressions import FieldType
from datamill.domain.streaming import Schema
from datamill.engines.duckdb import Limits, Sandbox, connect_locked, identifier, sql_string
from datamill.engines.duckdb.streaming.render import (
    DUCKDB_TYPES,
    arrow_sql,
    describe_structure,
    json_lines_sql,
)
from datamill.engines.duckdb.streaming.state import STATE_FILE, DuckDBStateStore, StatefulStep
from datamill.engines.streaming import BatchContext, Relation, SourceBatch


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class DuckDBExecutor:
    """A :class:`~datamill.engines.streaming.MicroBatchExecutor` on one connection."""

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
        ref = identifier(name)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {ref} AS {sql}")
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
            found = self.con.execute(
                f"SELECT json_group_structure(TRY_CAST(line AS JSON)) FROM {raw}"
            ).fetchall()
            structure = describe_structure(found[0][0] if found else None)
        # a line that is not JSON (a connector's odd message) gives a record of NULLs
        parsed = f"(SELECT TRY_CAST(line AS JSON) AS line FROM {raw})"
        return self._temp_table(f"__src_{op_id}", json_lines_sql(parsed, schema, structure))

    def empty(self, op_id: str, schema: Schema) -> Relation:
        columns = []
        for name, kind in schema.fields.items():
            sql_type = DUCKDB_TYPES[kind] if isinstance(kind, FieldType) else "VARCHAR"
            columns.append(f"NULL::{sql_type} AS {identifier(name)}")
        sql = f"SELECT {', '.join(columns) or 'NULL AS _empty'} WHERE FALSE"
        return self._temp_table(f"__empty_{op_id}", sql)

    def max_time(self, relation: Relation, field_name: str) -> datetime | None:
        found = self.con.execute(f"SELECT max({identifier(field_name)}) FROM {relation}").fetchall()
        return _aware(found[0][0]) if found else None

    def union(self, relations: list[Relation]) -> Relation | None:
        if not relations:
            return None
        if len(relations) == 1:
            return relations[0]
        return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {r}" for r in relations) + ")"

    def sql(self, render: Callable[[Relation], str], relation: Relation) -> Relation:
        return "(" + render(relation) + ")"

    def materialize(self, op_id: str, relation: Relation) -> Relation:
        return self._temp_table(f"__op_{op_id}", f"SELECT * FROM {relation}")

    def count(self, relation: Relation) -> int:
        rows = self.con.execute(f"SELECT count(*) FROM {relation}").fetchall()
        return int(rows[0][0]) if rows else 0

    def stateful(
        self, op_id: str, step: Any, relation: Relation, ctx: BatchContext
    ) -> tuple[Relation, int]:
        # a step reads a table: its rowid is the records' arrival order
        table = self._temp_table(f"__in_{op_id}", f"SELECT * FROM {relation}")
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
        table = self.con.sql(f"SELECT * FROM {relation}").to_arrow_table()
        result = apply(table) if table.num_rows else table
        name = f"__fn_{op_id}"
        self.con.register(name, result)
        self._registered.append(name)
        return identifier(name)

    def write(self, sink: Any, relation: Relation, epoch: int) -> int:
        if getattr(sink, "copy_format", None) == "PARQUET":
            path = sink.stage_file(epoch)
            rows = self.con.execute(
                f"COPY (SELECT * FROM {relation}) TO {sql_string(str(path))} "
                "(FORMAT parquet, COMPRESSION zstd)"
            ).fetchall()
            count = int(rows[0][0]) if rows else 0
            sink.staged(path, count)
            return count
        table = self.con.sql(f"SELECT * FROM {relation}").to_arrow_table()
        if table.num_rows:
            sink.write(table, epoch)
        return int(table.num_rows)

    def end_batch(self) -> None:
        for ref in reversed(self._temp):
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"DROP TABLE IF EXISTS {ref}")
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
