"""The check of a whole streaming job: graph, configurations and schemas.

Saving a draft accepts any configuration; the check (:func:`check_pipeline`) then proves
the pipeline can run:

* the graph: unique ids, existing inputs, no cycle, sources read nothing, every other
  operator reads something, nothing reads a sink, everything is fed by a source, and
  every non-sink output is read;
* the configuration of each operator, parsed by its class's config model;
* the schemas: in topological order each operator computes its output fields from its
  inputs and configuration (:meth:`Operator.output_schema`), so a field that does not
  exist upstream, a type that does not fit or an expression that does not compile is
  reported with the operator id and the config path.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from datamill.domain.streaming.jobs import ENGINES, JobInputType, OperatorInstance, StreamingJobBody
from datamill.domain.streaming.operators import Operator, Role, UnknownOperator, operator
from datamill.domain.streaming.schema import Problem, Schema, merge
from datamill.domain.streaming.views import CheckInfo

GRAPH = "$graph"
"""The ``check_info`` key of problems with the whole graph rather than one operator."""
DEFINITION = "$definition"
"""The ``check_info`` key of problems with ``definition``."""
ENGINE = "$engine"
"""The ``check_info`` key of problems with ``engine``."""


@dataclass
class CheckResult:
    """The outcome of :func:`check_pipeline`.

    ``info`` is the seed's ``check_info`` (empty when the pipeline can run); ``schemas``
    the output schema of each operator; ``order`` the operators in topological order.
    """

    info: CheckInfo
    schemas: dict[str, Schema]
    order: list[str]

    @property
    def passed(self) -> bool:
        return not self.info


class _Graph:
    """The operators by id and the valid edges between them."""

    def __init__(self, body: StreamingJobBody, info: CheckInfo) -> None:
        self.info = info
        self.ops: dict[str, OperatorInstance] = {}
        self.position: dict[str, int] = {}
        for index, op in enumerate(body.operatorInstances):
            if op.id in self.ops:
                count = sum(1 for o in body.operatorInstances if o.id == op.id)
                message = f"operator id '{op.id}' is used by {count} operators; ids are unique"
                if message not in info.get(GRAPH, []):
                    self.report(GRAPH, message)
                continue
            self.ops[op.id] = op
            self.position[op.id] = index
        self.kinds: dict[str, Operator[Any] | None] = {}
        for op_id, op in self.ops.items():
            kind: Operator[Any] | None = None
            try:
                kind = operator(op.className)
            except UnknownOperator as exc:
                self.report(
                    op_id, f"className: {exc}" if op.className.strip() else "className: empty"
                )
            self.kinds[op_id] = kind
        self.inputs: dict[str, list[str]] = {op_id: [] for op_id in self.ops}
        self.outputs: dict[str, list[str]] = {op_id: [] for op_id in self.ops}
        for op_id, op in self.ops.items():
            self.link(op_id, op)

    def report(self, key: str, message: str) -> None:
        self.info.setdefault(key, []).append(message)

    def role(self, op_id: str) -> Role | None:
        kind = self.kinds.get(op_id)
        return kind.role if kind else None

    def link(self, op_id: str, op: OperatorInstance) -> None:
        role = self.role(op_id)
        if role == Role.SOURCE and op.inputs:
            self.report(op_id, f"fromOperators: a source ({op.className}) reads no operator")
            return
        if role != Role.SOURCE and not op.inputs:
            self.report(op_id, "fromOperators: empty (an operator reads at least one other)")
        seen: set[str] = set()
        for i, upstream in enumerate(op.inputs):
            path = f"fromOperators[{i}].id"
            if upstream in seen:
                self.report(op_id, f"{path}: '{upstream}' is listed twice")
            elif upstream not in self.ops:
                self.report(op_id, f"{path}: operator '{upstream}' does not exist")
            elif upstream == op_id:
                self.report(op_id, f"{path}: an operator cannot read its own output (a cycle)")
            elif self.role(upstream) == Role.SINK:
                name = self.ops[upstream].className
                self.report(op_id, f"{path}: '{upstream}' is a sink ({name}) and has no output")
            else:
                self.inputs[op_id].append(upstream)
                self.outputs[upstream].append(op_id)
            seen.add(upstream)

    def topological(self) -> tuple[list[str], set[str]]:
        """The operators in an order where inputs come first, and those left in or after
        a cycle (each cycle reported)."""
        waiting = {op_id: len(ins) for op_id, ins in self.inputs.items()}
        ready = [op_id for op_id, count in waiting.items() if count == 0]
        order: list[str] = []
        while ready:
            ready.sort(key=self.position.__getitem__, reverse=True)
            op_id = ready.pop()
            order.append(op_id)
            for downstream in self.outputs[op_id]:
                waiting[downstream] -= 1
                if waiting[downstream] == 0:
                    ready.append(downstream)
        left = set(self.ops) - set(order)
        self.report_cycles(left)
        return order, left

    def report_cycles(self, left: set[str]) -> None:
        done: set[str] = set()
        for start in sorted(left, key=self.position.__getitem__):
            if start in done:
                continue
            walk, index, node = [start], {start: 0}, start
            cycle: list[str] = []
            while True:
                upstream = next(u for u in self.inputs[node] if u in left)
                if upstream in index:
                    cycle = walk[index[upstream] :]
                    break
                if upstream in done:
                    break
                index[upstream] = len(walk)
                walk.append(upstream)
                node = upstream
            done.update(walk)
            if cycle:
                flow = [*reversed(cycle), cycle[-1]]
                self.report(GRAPH, "operators form a cycle: " + " -> ".join(flow))

    def reachability(self) -> None:
        sources = [op_id for op_id in self.ops if self.role(op_id) == Role.SOURCE]
        sinks = [op_id for op_id in self.ops if self.role(op_id) == Role.SINK]
        if not sources:
            self.report(GRAPH, "the pipeline has no source (PipelineSource)")
        if not sinks:
            self.report(GRAPH, "the pipeline has no sink (DISSink, SMNSink): nothing is output")
        reached, frontier = set(sources), list(sources)
        while frontier:
            for downstream in self.outputs[frontier.pop()]:
                if downstream not in reached:
                    reached.add(downstream)
                    frontier.append(downstream)
        for op_id in self.ops:
            if op_id not in reached and self.inputs[op_id]:
                self.report(
                    op_id,
                    "fromOperators: not reachable from a source (no chain of inputs "
                    "leads back to a PipelineSource)",
                )
            dead_end = not self.outputs[op_id] and self.role(op_id) not in (None, Role.SINK)
            if dead_end:
                self.report(op_id, "its output is not read by any operator (add a sink)")


def check_pipeline(body: StreamingJobBody, engines: Collection[str] = ENGINES) -> CheckResult:
    """Check the whole job: its engine (one of ``engines``), graph, configurations and
    schemas (see the module docstring)."""
    info: CheckInfo = {}
    if body.engine not in engines:
        info[ENGINE] = [
            f"engine: unknown engine '{body.engine}'; the engines are " + ", ".join(engines)
        ]
    if body.definition.jobInputType == JobInputType.ASSET_DATA:
        info[DEFINITION] = [
            "jobInputType: ASSET_DATA jobs are not supported yet; use PIPELINE_DATA"
        ]
    if not body.operatorInstances:
        info[GRAPH] = ["the pipeline has no operators"]
        return CheckResult(info, {}, [])
    graph = _Graph(body, info)
    order, left = graph.topological()
    graph.reachability()
    schemas: dict[str, Schema] = {}
    for op_id in [*order, *sorted(left, key=graph.position.__getitem__)]:
        schemas[op_id] = _operator_schema(graph, op_id, schemas)
    rank = {key: i for i, key in enumerate([ENGINE, DEFINITION, GRAPH, *graph.position])}
    ordered = dict(sorted(info.items(), key=lambda item: rank.get(item[0], len(rank))))
    return CheckResult(ordered, schemas, order)


def _operator_schema(graph: _Graph, op_id: str, schemas: dict[str, Schema]) -> Schema:
    kind, op = graph.kinds[op_id], graph.ops[op_id]
    if kind is None:
        return Schema.unknown()
    config, problems = kind.parse_config(op.configs)
    inputs = [
        (upstream, schemas.get(upstream, Schema.unknown())) for upstream in graph.inputs[op_id]
    ]
    if not inputs and kind.role != Role.SOURCE:
        inputs = [("", Schema.unknown())]
    output = Schema.unknown()
    if config is not None:
        schemas_in = [schema for _, schema in inputs]
        if kind.merge_inputs and kind.role != Role.SOURCE:
            merged, merge_problems = merge(inputs)
            problems.extend(merge_problems)
            schemas_in = [merged]
        output, more = kind.output_schema(schemas_in, config)
        problems.extend(more)
    for problem in _unique(problems):
        graph.report(op_id, str(problem))
    return output


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
