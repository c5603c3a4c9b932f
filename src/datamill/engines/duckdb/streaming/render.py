"""DuckDB rendering of streaming plans: expressions, operator queries and source typing.

The domain compiles operators into dialect-neutral steps whose values are sqlglot trees
(:mod:`datamill.domain.streaming.steps`); this module renders them as DuckDB SQL. The
generator below spells the JSON, time and string functions the way DuckDB names them.

Rendering happens once per job start: a stateless step becomes a text template around its
input relation (:func:`query_renderer`), and the source typing queries are cached per
schema, so a micro-batch only joins strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import pyarrow as pa
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB

from datamill.domain.expressions import (
    Compiled,
    FieldType,
    ValueType,
    cast,
    column,
    json_path,
    sql_type,
    string,
)
from datamill.domain.streaming import (
    AddFields,
    ExplodeArray,
    KeepRecords,
    QueryStep,
    Schema,
    SelectColumns,
)


class DatamillDuckDB(DuckDB):
    """DuckDB, with the function and type names the streaming engine relies on."""

    class Generator(DuckDB.Generator):  # type: ignore[misc, valid-type]
        TYPE_MAPPING = {
            **DuckDB.Generator.TYPE_MAPPING,
            exp.DataType.Type.VARCHAR: "VARCHAR",
            exp.DataType.Type.INT: "INTEGER",
            exp.DataType.Type.FLOAT: "FLOAT",
        }
        TRANSFORMS = {
            **DuckDB.Generator.TRANSFORMS,
            exp.JSONExtract: lambda self, e: self.func("json_extract", e.this, e.expression),
            exp.JSONExtractScalar: lambda self, e: self.func(
                "json_extract_string", e.this, e.expression
            ),
            exp.JSONObject: lambda self, e: self.func(
                "json_object", *[part for pair in e.expressions for part in pair.args.values()]
            ),
            exp.StrToTime: lambda self, e: self.func("try_strptime", e.this, e.args["format"]),
            exp.UnixToTime: lambda self, e: self.func("make_timestamp", e.this),
            exp.UnixMillis: lambda self, e: self.func("epoch_ms", e.this),
            exp.Contains: lambda self, e: self.func("contains", e.this, e.expression),
            exp.Concat: lambda self, e: self.func("concat", *e.expressions),
            exp.Pow: lambda self, e: self.func("pow", e.this, e.expression),
            exp.CurrentTimestamp: lambda self, e: "now()",
        }


DIALECT = DatamillDuckDB()

DUCKDB_TYPES: dict[FieldType, str] = {kind: sql_type(kind).sql(DIALECT) for kind in FieldType}
"""How the engine holds each type in DuckDB: MAP and ARRAY values are JSON."""


def sql(expression: exp.Expr) -> str:
    """``expression`` as DuckDB SQL."""
    return DIALECT.generate(expression, normalize_functions=False)


def expression_sql(compiled: Compiled) -> str:
    """A compiled streaming expression as DuckDB SQL."""
    return sql(compiled.expression)


Render = Callable[[str], str]
"""A query as a function of its input relation (a table name or a parenthesized query)."""


def template(build: Callable[[exp.Expr], exp.Expr]) -> Render:
    """Render ``build(input)`` once, leaving a hole for the input relation.

    The hole is a placeholder table whose name occurs nowhere else in the text (a string
    literal of the user's could hold it: then another name is tried)."""
    for attempt in range(1000):
        name = f"__dm_input{attempt}"
        hole = exp.to_identifier(name, quoted=True)
        text = sql(build(exp.Table(this=hole)))
        marker = sql(hole)
        if text.count(marker) == 1:
            head, tail = text.split(marker)
            return lambda relation: head + relation + tail
    raise ValueError("no placeholder name is free in the query")


# --------------------------------------------------------------------------- operator queries


def _alias(value: exp.Expr, name: str) -> exp.Expr:
    return exp.alias_(value, name, quoted=True)


def _with_fields(source: exp.Expr, schema: Schema, added: dict[str, exp.Expr]) -> exp.Select:
    """``SELECT`` the input with ``added`` fields, replacing those of the same name in
    place when the input is known to have them."""
    replace = {n: e for n, e in added.items() if n in schema.fields}
    new = {n: e for n, e in added.items() if n not in schema.fields}
    head: exp.Expr = exp.Star()
    if schema.open and new:
        # the input may hold these names already: drop them, then add them at the end
        name = exp.to_identifier("c")
        names = [string(n) for n in added]
        keep = exp.Not(this=exp.In(this=name, expressions=names))
        head = exp.Columns(this=exp.Lambda(this=keep, expressions=[name]))
        new, replace = added, {}
    if replace:
        head = exp.Star(replace=[_alias(e, n) for n, e in replace.items()])
    return exp.select(head, *[_alias(e, n) for n, e in new.items()]).from_(source)


def _explode(source: exp.Expr, step: ExplodeArray) -> exp.Select:
    elements = exp.Anonymous(this="from_json", expressions=[step.array, string('["JSON"]')])
    unnest = exp.Anonymous(this="unnest", expressions=[elements])
    exploded = exp.select(exp.Star(), _alias(unnest, step.element)).from_(source)
    inner = _with_fields(exp.Subquery(this=exploded), step.input_schema, step.fields)
    drop = exp.Star(except_=[column(step.element)])
    return exp.select(drop).from_(exp.Subquery(this=inner))


def _query(step: QueryStep, source: exp.Expr) -> exp.Select:
    if isinstance(step, KeepRecords):
        return exp.select(exp.Star()).from_(source).where(step.predicate)
    if isinstance(step, AddFields):
        return _with_fields(source, step.input_schema, step.fields)
    if isinstance(step, SelectColumns):
        return exp.select(*[column(n) for n in step.names]).from_(source)
    return _explode(source, step)


def query_renderer(step: QueryStep) -> Render:
    """The DuckDB query of a stateless operator's step, as a template over its input."""
    return template(lambda source: _query(step, source))


# --------------------------------------------------------------------------- source typing


def _call(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


def _json_field(line: exp.Expr, name: str, kind: ValueType) -> exp.Expr:
    path = string(json_path((name,)))
    text = _call("json_extract_string", line, path)
    if kind in (FieldType.MAP, FieldType.ARRAY):
        return _call("json_extract", line, path)
    if kind == FieldType.TIMESTAMP:
        number = exp.In(
            this=_call("json_type", line, path),
            expressions=[string("UBIGINT"), string("BIGINT"), string("DOUBLE")],
        )
        seconds = exp.TryCast(this=_call("json_extract", line, path), to=sql_type(FieldType.DOUBLE))
        millis = _call("epoch_ms", exp.Cast(this=seconds, to=sql_type(FieldType.LONG)))
        zoned = exp.TryCast(this=text, to=exp.DataType.build("TIMESTAMPTZ"))
        parsed = exp.Cast(this=zoned, to=sql_type(FieldType.TIMESTAMP))
        return exp.Case(ifs=[exp.If(this=number, true=millis)], default=parsed)
    if isinstance(kind, FieldType):
        return cast(text, kind)
    return text


_STRUCTURE_TYPES = {"BIGINT", "UBIGINT", "DOUBLE", "BOOLEAN", "VARCHAR"}


@lru_cache(maxsize=256)
def _json_lines_template(
    fields: tuple[tuple[str, ValueType], ...], open_: bool, structure_text: str | None
) -> Render:
    line = column("line")
    parts: list[exp.Expr] = []
    if fields or not open_:
        parts = [_alias(_json_field(line, name, kind), name) for name, kind in fields]
    else:
        structure: dict[str, Any] = json.loads(structure_text) if structure_text else {}
        for name, kind in structure.items():
            path = string(json_path((name,)))
            value: exp.Expr
            if isinstance(kind, str) and kind in _STRUCTURE_TYPES:
                text = _call("json_extract_string", line, path)
                value = exp.TryCast(this=text, to=exp.DataType.build(kind, dialect="duckdb"))
            elif isinstance(kind, str):
                value = _call("json_extract_string", line, path)
            else:
                value = _call("json_extract", line, path)
            parts.append(_alias(value, name))
    if not parts:
        parts = [exp.alias_(exp.Null(), "_empty")]
    return template(lambda source: exp.select(*parts).from_(source))


def json_lines_sql(table: str, schema: Schema, structure: dict[str, Any] | None = None) -> str:
    """SELECT the schema's fields out of ``table``'s ``line`` column of JSON texts.

    ``structure`` (DuckDB's ``json_group_structure`` of the batch) gives the keys and
    types of an open schema's records.
    """
    declared = bool(schema.fields) or not schema.open
    structure_text = None if declared or not structure else json.dumps(structure)
    render = _json_lines_template(tuple(schema.fields.items()), schema.open, structure_text)
    return render(table)


_ARROW_MATCHES: dict[FieldType, Callable[[pa.DataType], bool]] = {
    FieldType.STRING: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    FieldType.INTEGER: lambda t: t == pa.int32(),
    FieldType.LONG: lambda t: t == pa.int64(),
    FieldType.FLOAT: lambda t: t == pa.float32(),
    FieldType.DOUBLE: lambda t: t == pa.float64(),
    FieldType.BOOLEAN: lambda t: t == pa.bool_(),
    FieldType.TIMESTAMP: lambda t: pa.types.is_timestamp(t) and t.tz is None,
}


@lru_cache(maxsize=256)
def _arrow_template(fields: tuple[tuple[str, ValueType], ...], arrow_schema: pa.Schema) -> Render:
    parts: list[exp.Expr] = []
    names = set(arrow_schema.names)
    for name, kind in fields:
        ref = column(name)
        if name not in names:
            target = sql_type(kind) if isinstance(kind, FieldType) else sql_type(FieldType.STRING)
            parts.append(_alias(exp.Cast(this=exp.Null(), to=target), name))
            continue
        arrow_type = arrow_schema.field(name).type
        matches = _ARROW_MATCHES.get(kind) if isinstance(kind, FieldType) else None
        if matches is not None and matches(arrow_type):
            parts.append(ref)
        elif kind == FieldType.TIMESTAMP and pa.types.is_timestamp(arrow_type):
            parts.append(_alias(exp.Cast(this=ref, to=sql_type(FieldType.TIMESTAMP)), name))
        elif isinstance(kind, FieldType):
            parts.append(_alias(cast(ref, kind), name))
        else:
            parts.append(ref)
    return template(lambda source: exp.select(*parts).from_(source))


def arrow_sql(table: str, schema: Schema, arrow_schema: pa.Schema) -> str:
    """SELECT the schema's fields from an Arrow table, cast only where types differ."""
    if schema.open and not schema.fields:
        return f"SELECT * FROM {table}"
    return _arrow_template(tuple(schema.fields.items()), arrow_schema)(table)


def describe_structure(raw: str | None) -> dict[str, Any]:
    """DuckDB's ``json_group_structure`` result as a dict of top-level keys."""
    if not raw:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}
