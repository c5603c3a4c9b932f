"""A checked pipeline compiled into the steps the engine runs per micro-batch.

Each operator compiles itself (``Operator.compile``, looked up in the operator registry by
``className``) into a dialect-neutral step; this module turns the steps into runnable
nodes, once per job start:

* a source step becomes a :class:`~datamill.connectors.streams.base.StreamSource` chosen
  by its connection's type (the job's ingest log when it names none);
* stateless steps (Filter, Map, SelectFields, Flat, Nest) become DuckDB SQL templates over
  their input (:mod:`datamill.engines.duckdb.streaming.render`): a chain of them is one
  DuckDB query per batch (fused). An operator read by several others is materialized once
  per batch;
* stateful specs (Aggregate, Deduplicate) become :class:`~.state.StatefulStep` objects
  built by ``engines.duckdb.streaming.stateful.build_stateful``; a call step (CallFunctionGraph)
  a :class:`~datamill.connectors.streams.base.StreamTransform`; sink steps
  :class:`~datamill.connectors.streams.base.StreamSink` objects chosen by their
  connection's type or, without a connection, by their built-in kind.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from datamill.domain.streaming import (
    AddFields,
    CheckResult,
    CompileError,
    ExplodeArray,
    KeepRecords,
    Schema,
    SelectColumns,
    SinkStep,
    SourceStep,
    StatefulSpec,
    Step,
    StreamingJobBody,
    StreamingRuntime,
    TransformStep,
    merge,
    operator,
)
from datamill.engines.duckdb.streaming.render import Render, query_renderer
from datamill.engines.duckdb.streaming.state import StatefulStep
from datamill.runtime.streaming import sinks as builtin_sinks


class PlanError(Exception):
    """The pipeline cannot run as configured (the job fails with this reason)."""


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
        extra={"job_dir": ctx.job_dir, "project_root": ctx.project_root},
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


def _build_stateful(op_id: str, spec: StatefulSpec, runtime: StreamingRuntime) -> StatefulStep:
    try:
        stateful: Any = importlib.import_module("datamill.engines.duckdb.streaming.stateful")
    except ImportError as exc:
        raise PlanError(
            f"operator '{op_id}': {spec.class_name} is not available in this engine"
        ) from exc
    try:
        step: StatefulStep = stateful.build_stateful(
            op_id,
            spec.class_name,
            spec.config,
            spec.input_schema,
            spec.output_schema,
            runtime,
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
            kind = operator(op.className)
            config, _ = kind.parse_config(op.configs)
            assert config is not None
            class_names[op_id] = op.className
            if config.advanceConfigs.parallelism:
                parallelism[op_id] = config.advanceConfigs.parallelism
            in_schema = merge([(i, check.schemas[i]) for i in inputs[op_id]])[0]
            try:
                step = kind.compile(config, in_schema, check.schemas[op_id])
            except CompileError as exc:
                raise PlanError(f"operator '{op_id}': {exc}") from exc
            nodes[op_id] = _node(ctx, runtime, op_id, step, check.schemas[op_id])
    except Exception:
        plan.close()
        raise
    return plan


def _node(
    ctx: PlanContext, runtime: StreamingRuntime, op_id: str, step: Step, out_schema: Schema
) -> Node:
    if isinstance(step, SourceStep):
        return SourceNode(op_id, out_schema, _source(ctx, op_id, step), out_schema.event_time)
    if isinstance(step, KeepRecords | AddFields | SelectColumns | ExplodeArray):
        return SqlNode(op_id, query_renderer(step), step.one_to_one)
    if isinstance(step, StatefulSpec):
        return StatefulNode(op_id, _build_stateful(op_id, step, runtime))
    if isinstance(step, TransformStep):
        connection = _connection(ctx, op_id, step.connection)
        assert connection is not None
        factory = _factory(TRANSFORMS, "function", op_id, connection)
        return TransformNode(
            op_id, factory(connection.spec, step.settings, _context(ctx, op_id, connection))
        )
    return SinkNode(op_id, _sink(ctx, op_id, step))


def _source(ctx: PlanContext, op_id: str, step: SourceStep) -> StreamSource:
    connection = _connection(ctx, op_id, step.connection)
    if connection is None:
        return ctx.ingest_source()
    factory = _factory(SOURCES, "source", op_id, connection)
    source: StreamSource = factory(connection.spec, step.settings, _context(ctx, op_id, connection))
    return source


def _sink(ctx: PlanContext, op_id: str, step: SinkStep) -> StreamSink:
    connection = _connection(ctx, op_id, step.connection)
    context = _context(ctx, op_id, connection)
    if connection is None:
        factory = SINKS.get(step.kind or "")
        if factory is None:
            raise PlanError(f"operator '{op_id}': no sink of kind '{step.kind}'")
        try:
            built: StreamSink = factory({}, step.settings, context)
        except builtin_sinks.SinkTargetError as exc:
            raise PlanError(f"operator '{op_id}': {exc}") from exc
        return built
    factory = _factory(SINKS, "sink", op_id, connection)
    sink: StreamSink = factory(connection.spec, step.settings, context)
    return sink
