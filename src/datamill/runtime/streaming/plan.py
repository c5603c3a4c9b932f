"""A checked pipeline compiled into the steps the engine runs per micro-batch.

* Sources become a typed relation: JSON lines are parsed by DuckDB into the declared
  fields (``TRY_CAST``: a value that does not convert becomes NULL; a TIMESTAMP may be an
  ISO text or epoch milliseconds), Arrow batches are cast only where their types differ.
  A source that declares no fields gets every top-level key of the batch's records.
* Stateless operators (Filter, Map, SelectFields, Flat, Nest) become SQL over their
  input's SQL: a chain of them is one DuckDB query per batch (fused). An operator read by
  several others is materialized once per batch.
* Aggregate and Deduplicate become :class:`~.state.StatefulStep` objects built by
  ``engines.duckdb.streaming.stateful.build_stateful``; CallFunctionGraph a
  :class:`~datamill.connectors.streams.base.StreamTransform`; sinks
  :class:`~datamill.connectors.streams.base.StreamSink` objects.

Every expression comes from :mod:`datamill.domain.expressions` (never ``eval``), every
name is a quoted identifier.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from datamill.connectors.streams.base import (
    SINKS,
    SOURCES,
    TRANSFORMS,
    StreamConnection,
    StreamContext,
    StreamSink,
    StreamSource,
    StreamTransform,
)
from datamill.domain.expressions import (
    DUCKDB_TYPES,
    FieldType,
    ValueType,
    cast_sql,
    combine,
    compile_expression,
    json_path,
    parse_path,
    quote_identifier,
    quote_string,
)
from datamill.domain.streaming import (
    OPERATORS,
    CheckResult,
    DISSinkConfig,
    FilterConfig,
    FlatConfig,
    MapConfig,
    NestConfig,
    NestValueType,
    OperatorConfig,
    PipelineSourceConfig,
    Problems,
    Role,
    Schema,
    SelectFieldsConfig,
    StreamingJobBody,
    StreamingRuntime,
    merge,
)
from datamill.domain.streaming import Filter as FilterOperator
from datamill.engines.duckdb.streaming.state import StatefulStep
from datamill.security.paths import resolve_inside

ONE_TO_ONE = frozenset({"Map", "SelectFields", "Nest", "CallFunctionGraph"})
"""Operators that output exactly one record per input record."""


class PlanError(Exception):
    """The pipeline cannot run as configured (the job fails with this reason)."""


# --------------------------------------------------------------------------- source typing


def _json_field_sql(column: str, name: str, kind: ValueType) -> str:
    path = quote_string(json_path((name,)))
    text = f"json_extract_string({column}, {path})"
    if kind in (FieldType.MAP, FieldType.ARRAY):
        return f"json_extract({column}, {path})"
    if kind == FieldType.TIMESTAMP:
        return (
            f"CASE WHEN json_type({column}, {path}) IN ('UBIGINT', 'BIGINT', 'DOUBLE') "
            f"THEN epoch_ms(TRY_CAST(json_extract({column}, {path}) AS DOUBLE)::BIGINT) "
            f"ELSE TRY_CAST({text} AS TIMESTAMPTZ)::TIMESTAMP END"
        )
    if isinstance(kind, FieldType):
        return cast_sql(text, kind)
    return text


_STRUCTURE_TYPES = {"BIGINT", "UBIGINT", "DOUBLE", "BOOLEAN", "VARCHAR"}


def json_lines_sql(table: str, schema: Schema, structure: dict[str, Any] | None = None) -> str:
    """SELECT the schema's fields out of ``table``'s ``line`` column of JSON texts.

    ``structure`` (DuckDB's ``json_group_structure`` of the batch) gives the keys and
    types of an open schema's records.
    """
    parts = []
    column = '"line"'
    if schema.fields or not schema.open:
        for name, kind in schema.fields.items():
            parts.append(f"{_json_field_sql(column, name, kind)} AS {quote_identifier(name)}")
    else:
        for name, kind in (structure or {}).items():
            path = quote_string(json_path((name,)))
            if isinstance(kind, str) and kind in _STRUCTURE_TYPES:
                sql = f"TRY_CAST(json_extract_string({column}, {path}) AS {kind})"
            elif isinstance(kind, str):
                sql = f"json_extract_string({column}, {path})"
            else:
                sql = f"json_extract({column}, {path})"
            parts.append(f"{sql} AS {quote_identifier(name)}")
    if not parts:
        parts = ["NULL AS _empty"]
    return f"SELECT {', '.join(parts)} FROM {table}"


_ARROW_MATCHES: dict[FieldType, Callable[[pa.DataType], bool]] = {
    FieldType.STRING: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    FieldType.INTEGER: lambda t: t == pa.int32(),
    FieldType.LONG: lambda t: t == pa.int64(),
    FieldType.FLOAT: lambda t: t == pa.float32(),
    FieldType.DOUBLE: lambda t: t == pa.float64(),
    FieldType.BOOLEAN: lambda t: t == pa.bool_(),
    FieldType.TIMESTAMP: lambda t: pa.types.is_timestamp(t) and t.tz is None,
}


def arrow_sql(table: str, schema: Schema, arrow_schema: pa.Schema) -> str:
    """SELECT the schema's fields from an Arrow table, cast only where types differ."""
    if schema.open and not schema.fields:
        return f"SELECT * FROM {table}"
    parts = []
    names = set(arrow_schema.names)
    for name, kind in schema.fields.items():
        ident = quote_identifier(name)
        if name not in names:
            target = DUCKDB_TYPES[kind] if isinstance(kind, FieldType) else "VARCHAR"
            parts.append(f"NULL::{target} AS {ident}")
            continue
        arrow_type = arrow_schema.field(name).type
        matches = _ARROW_MATCHES.get(kind) if isinstance(kind, FieldType) else None
        if matches is not None and matches(arrow_type):
            parts.append(ident)
        elif kind == FieldType.TIMESTAMP and pa.types.is_timestamp(arrow_type):
            parts.append(f"CAST({ident} AS TIMESTAMP) AS {ident}")
        elif isinstance(kind, FieldType):
            parts.append(f"{cast_sql(ident, kind)} AS {ident}")
        else:
            parts.append(ident)
    return f"SELECT {', '.join(parts)} FROM {table}"


# --------------------------------------------------------------------------- stateless SQL


def _with_fields(input_sql: str, schema: Schema, added: dict[str, str]) -> str:
    """``SELECT`` the input with ``added`` fields (name -> SQL), replacing those of the
    same name in place when the input is known to have them."""
    replace = {n: s for n, s in added.items() if n in schema.fields}
    new = {n: s for n, s in added.items() if n not in schema.fields}
    if schema.open and new:
        # the input may hold these names already: drop them, then add them at the end
        names = ", ".join(quote_string(n) for n in added)
        head = f"COLUMNS(lambda c: c NOT IN ({names}))"
        new = added
        replace = {}
    else:
        head = "*"
    if replace:
        head += (
            " REPLACE ("
            + ", ".join(f"{sql} AS {quote_identifier(n)}" for n, sql in replace.items())
            + ")"
        )
    tail = "".join(f", {sql} AS {quote_identifier(n)}" for n, sql in new.items())
    return f"SELECT {head}{tail} FROM {input_sql}"


def _path_sql(source: str, keys: tuple[str | int, ...], kind: FieldType | None) -> str:
    if kind in (FieldType.MAP, FieldType.ARRAY):
        return f"json_extract({source}, {quote_string(json_path(keys))})" if keys else source
    value = f"json_extract_string({source}, {quote_string(json_path(keys))})" if keys else source
    if kind == FieldType.TIMESTAMP:
        return f"TRY_CAST({value} AS TIMESTAMPTZ)::TIMESTAMP"
    return cast_sql(value, kind) if kind is not None else value


def _constant_sql(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "NULL"
    return quote_string(str(value))


Render = Callable[[str], str]


def render_filter(schema: Schema, config: FilterConfig) -> Render:
    conditions = FilterOperator.conditions(Problems(), schema, config)
    relationship = (config.basicConfigs.conditionRelationship or "AND").upper()
    predicate = combine(conditions, relationship)
    return lambda inp: f"SELECT * FROM {inp} WHERE {predicate}"


def render_map(schema: Schema, config: MapConfig) -> Render:
    added = {}
    for mapped in config.basicConfigs.mapFieldConfig or []:
        compiled = compile_expression(mapped.expression or "", schema.scope)
        sql = cast_sql(compiled.sql, mapped.type) if mapped.type else compiled.sql
        added[str(mapped.field)] = sql
    return lambda inp: _with_fields(inp, schema, added)


def render_select(config: SelectFieldsConfig) -> Render:
    names = ", ".join(quote_identifier(n) for n in config.basicConfigs.selectFields)
    return lambda inp: f"SELECT {names} FROM {inp}"


def render_flat(schema: Schema, config: FlatConfig) -> Render:
    basic = config.basicConfigs
    multi = (basic.multiRecordsPath or "").strip()
    added = {}
    for flat in basic.flatFieldConfig or []:
        ref = parse_path(flat.path or "")
        if multi:
            keys = (ref.name, *ref.keys)
            added[str(flat.field)] = _path_sql('"__element"', keys, flat.type)
        else:
            added[str(flat.field)] = _path_sql(quote_identifier(ref.name), ref.keys, flat.type)
    if not multi:
        return lambda inp: _with_fields(inp, schema, added)
    array = parse_path(multi)
    array_sql = (
        f"json_extract({quote_identifier(array.name)}, {quote_string(json_path(array.keys))})"
    )
    exploded_schema = Schema(dict(schema.fields), open=True)

    def render(inp: str) -> str:
        exploded = (
            f'(SELECT *, unnest(from_json({array_sql}, \'["JSON"]\')) AS "__element" FROM {inp})'
        )
        inner = _with_fields(exploded, exploded_schema, added)
        return f'SELECT * EXCLUDE ("__element") FROM ({inner})'

    return render


def render_nest(schema: Schema, config: NestConfig) -> Render:
    nest = config.basicConfigs.nestFieldConfig
    assert nest is not None
    tree: dict[str, Any] = {}
    for item in nest.nestFields or []:
        keys = str(item.path).split(".")
        if item.type == NestValueType.CONSTANT:
            sql = _constant_sql(item.value)
        elif item.type == NestValueType.FIELD:
            sql = quote_identifier(str(item.value))
        else:
            ref = parse_path(str(item.value))
            sql = _path_sql(quote_identifier(ref.name), ref.keys, FieldType.MAP)
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = sql

    def build(node: dict[str, Any]) -> str:
        parts = []
        for key, value in node.items():
            inner = build(value) if isinstance(value, dict) else value
            parts.append(f"{quote_string(key)}, {inner}")
        return f"json_object({', '.join(parts)})"

    added = {str(nest.field): f"CAST({build(tree)} AS JSON)"}
    return lambda inp: _with_fields(inp, schema, added)


# --------------------------------------------------------------------------- the plan


@dataclass
class SourceNode:
    op_id: str
    schema: Schema
    source: StreamSource
    event_time: str | None


@dataclass
class SqlNode:
    op_id: str
    render: Render
    one_to_one: bool


@dataclass
class StatefulNode:
    op_id: str
    step: StatefulStep


@dataclass
class TransformNode:
    op_id: str
    transform: StreamTransform


@dataclass
class SinkNode:
    op_id: str
    sink: StreamSink


Node = SourceNode | SqlNode | StatefulNode | TransformNode | SinkNode


@dataclass
class Plan:
    order: list[str]
    nodes: dict[str, Node]
    inputs: dict[str, list[str]]
    consumers: dict[str, list[str]]
    class_names: dict[str, str]
    parallelism: dict[str, int] = field(default_factory=dict)

    def sources(self) -> list[SourceNode]:
        return [n for n in self.nodes.values() if isinstance(n, SourceNode)]

    def sinks(self) -> list[SinkNode]:
        return [n for n in self.nodes.values() if isinstance(n, SinkNode)]

    def stateful(self) -> list[StatefulNode]:
        return [n for n in self.nodes.values() if isinstance(n, StatefulNode)]

    def close(self) -> None:
        for node in self.nodes.values():
            target: Any = getattr(node, "source", None) or getattr(node, "sink", None)
            target = target or getattr(node, "transform", None)
            if target is not None:
                with contextlib.suppress(Exception):  # closing is best effort
                    target.close()


@dataclass
class PlanContext:
    """What compiling a plan needs from the outside."""

    project: str
    job_id: str
    job_dir: Path
    project_root: Path
    """The project's folder in the default data root: DISSink targets live under it."""
    connections: dict[str, StreamConnection]
    outbound_allow: list[str]
    ingest_source: Callable[[], StreamSource]
    log: Callable[[str], None] = lambda _line: None


def _context(ctx: PlanContext, op_id: str, connection: StreamConnection | None) -> StreamContext:
    state_dir = ctx.job_dir / "operators" / op_id
    state_dir.mkdir(parents=True, exist_ok=True)
    return StreamContext(
        project=ctx.project,
        job_id=ctx.job_id,
        operator_id=op_id,
        state_dir=state_dir,
        outbound_allow=ctx.outbound_allow,
        secret_values=connection.secret_values if connection else {},
        log=ctx.log,
    )


def _connection(ctx: PlanContext, op_id: str, name: str | None) -> StreamConnection | None:
    name = (name or "").strip()
    if not name:
        return None
    connection = ctx.connections.get(name)
    if connection is None:
        raise PlanError(f"operator '{op_id}': data source '{name}' could not be resolved")
    return connection


def _factory(registry: dict[str, Any], kind: str, op_id: str, connection: StreamConnection) -> Any:
    factory = registry.get(connection.type)
    if factory is None:
        known = ", ".join(sorted(registry)) or "none"
        raise PlanError(
            f"operator '{op_id}': data source '{connection.name}' is of type "
            f"'{connection.type}', which cannot be used as a streaming {kind} "
            f"(types available: {known})"
        )
    return factory


def connection_names(body: StreamingJobBody) -> list[str]:
    """The catalog connections the pipeline's operators name in ``dataSourceId``."""
    names = []
    for op in body.operatorInstances:
        basic = (op.configs.basicConfigs if op.configs else None) or {}
        name = basic.get("dataSourceId")
        if isinstance(name, str) and name.strip() and name.strip() not in names:
            names.append(name.strip())
    return names


def _build_stateful(
    op_id: str,
    class_name: str,
    config: OperatorConfig,
    input_schema: Schema,
    output_schema: Schema,
    runtime: StreamingRuntime,
) -> StatefulStep:
    try:
        stateful: Any = importlib.import_module("datamill.engines.duckdb.streaming.stateful")
    except ImportError as exc:
        raise PlanError(
            f"operator '{op_id}': {class_name} is not available in this engine"
        ) from exc
    try:
        step: StatefulStep = stateful.build_stateful(
            op_id, class_name, config, input_schema, output_schema, runtime
        )
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    return step


def compile_plan(
    body: StreamingJobBody, check: CheckResult, ctx: PlanContext, runtime: StreamingRuntime
) -> Plan:
    """The runnable plan of a checked pipeline; raises :class:`PlanError`."""
    if not check.passed:
        raise PlanError("the pipeline does not pass its check; save it with check=true")
    ops = {op.id: op for op in body.operatorInstances}
    inputs = {op_id: list(ops[op_id].inputs) for op_id in check.order}
    consumers: dict[str, list[str]] = {op_id: [] for op_id in check.order}
    for op_id, ins in inputs.items():
        for upstream in ins:
            consumers[upstream].append(op_id)
    nodes: dict[str, Node] = {}
    class_names: dict[str, str] = {}
    parallelism: dict[str, int] = {}
    plan = Plan(check.order, nodes, inputs, consumers, class_names, parallelism)
    try:
        for op_id in check.order:
            op = ops[op_id]
            kind = OPERATORS[op.className]
            config, _ = kind.parse_config(op.configs)
            assert config is not None
            class_names[op_id] = op.className
            if config.advanceConfigs.parallelism:
                parallelism[op_id] = config.advanceConfigs.parallelism
            in_schemas = [check.schemas[i] for i in inputs[op_id]]
            in_schema = merge([(i, check.schemas[i]) for i in inputs[op_id]])[0]
            nodes[op_id] = _node(
                ctx,
                runtime,
                op_id,
                op.className,
                kind.role,
                config,
                in_schema,
                check.schemas[op_id],
                in_schemas,
            )
    except Exception:
        plan.close()
        raise
    return plan


def _node(
    ctx: PlanContext,
    runtime: StreamingRuntime,
    op_id: str,
    class_name: str,
    role: Role,
    config: Any,
    in_schema: Schema,
    out_schema: Schema,
    in_schemas: list[Schema],
) -> Node:
    if class_name == "PipelineSource":
        assert isinstance(config, PipelineSourceConfig)
        connection = _connection(ctx, op_id, config.basicConfigs.dataSourceId)
        if connection is None:
            source = ctx.ingest_source()
        else:
            factory = _factory(SOURCES, "source", op_id, connection)
            basic = config.basicConfigs.model_dump(mode="json", exclude_none=True)
            source = factory(connection.spec, basic, _context(ctx, op_id, connection))
        return SourceNode(op_id, out_schema, source, out_schema.event_time)
    if class_name == "Filter":
        return SqlNode(op_id, render_filter(in_schema, config), False)
    if class_name == "Map":
        return SqlNode(op_id, render_map(in_schema, config), True)
    if class_name == "SelectFields":
        return SqlNode(op_id, render_select(config), True)
    if class_name == "Flat":
        multi = bool((config.basicConfigs.multiRecordsPath or "").strip())
        return SqlNode(op_id, render_flat(in_schema, config), not multi)
    if class_name == "Nest":
        return SqlNode(op_id, render_nest(in_schema, config), True)
    if class_name in ("Aggregate", "Deduplicate"):
        step = _build_stateful(op_id, class_name, config, in_schema, out_schema, runtime)
        return StatefulNode(op_id, step)
    if class_name == "CallFunctionGraph":
        connection = _connection(ctx, op_id, config.basicConfigs.dataSourceId)
        assert connection is not None
        factory = _factory(TRANSFORMS, "function", op_id, connection)
        basic = config.basicConfigs.model_dump(mode="json", exclude_none=True)
        return TransformNode(
            op_id, factory(connection.spec, basic, _context(ctx, op_id, connection))
        )
    if role == Role.SINK:
        return SinkNode(op_id, _sink(ctx, op_id, class_name, config))
    raise PlanError(f"operator '{op_id}': {class_name} cannot run in this engine")


def _sink(ctx: PlanContext, op_id: str, class_name: str, config: Any) -> StreamSink:
    from datamill.runtime.streaming.sinks import FolderSink

    basic = config.basicConfigs
    connection = _connection(ctx, op_id, getattr(basic, "dataSourceId", None))
    if connection is None:
        if class_name != "DISSink":
            raise PlanError(
                f"operator '{op_id}': {class_name} needs dataSourceId naming a notification "
                "data source"
            )
        assert isinstance(config, DISSinkConfig)
        target_job = (basic.targetJobId or "").strip()
        if target_job:
            from datamill.connectors.streams.ingest_log import IngestLog
            from datamill.runtime.streaming.ingest import JobSink

            if target_job == ctx.job_id or not target_job.replace("-", "").isalnum():
                raise PlanError(f"operator '{op_id}': targetJobId '{target_job[:100]}' is invalid")
            # jobs of a project share a parent folder (see ingest_log.job_dir)
            log = IngestLog(ctx.job_dir.parent / target_job / "ingest")
            return JobSink(log, ctx.job_dir / "staging" / op_id)
        try:
            target = resolve_inside(ctx.project_root, str(basic.target), "target")
        except Exception as exc:
            raise PlanError(f"operator '{op_id}': {exc}") from exc
        advance = config.advanceConfigs
        return FolderSink(
            target,
            ctx.job_dir / "staging" / op_id,
            str(advance.format or "JSON"),
            advance.csvSeparator,
            advance.partitioner,
        )
    factory = _factory(SINKS, "sink", op_id, connection)
    merged = {
        **config.basicConfigs.model_dump(mode="json", exclude_none=True),
        **config.advanceConfigs.model_dump(mode="json", exclude_none=True),
    }
    sink: StreamSink = factory(connection.spec, merged, _context(ctx, op_id, connection))
    return sink


def describe_structure(raw: str | None) -> dict[str, Any]:
    """DuckDB's ``json_group_structure`` result as a dict of top-level keys."""
    if not raw:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}
