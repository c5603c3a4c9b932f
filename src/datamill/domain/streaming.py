"""Streaming jobs (seed 000): a pipeline of operators, its check, and its state machine.

A job is a DAG of operator instances. Each instance names its operator class
(``className``), the instances it reads (``fromOperators``) and free-form ``configs``
(``basicConfigs`` / ``advanceConfigs``). Saving a draft accepts any configuration; the
check (:func:`check_pipeline`) then proves the pipeline can run:

* the graph: unique ids, existing inputs, no cycle, sources read nothing, every other
  operator reads something, nothing reads a sink, everything is fed by a source, and
  every non-sink output is read;
* the configuration of each operator, parsed by its class's config model;
* the schemas: in topological order each operator computes its output fields from its
  inputs and configuration (:meth:`Operator.output_schema`), so a field that does not
  exist upstream, a type that does not fit or an expression that does not compile is
  reported with the operator id and the config path.

Sources declare their fields in ``configs.basicConfigs.fields`` (``[{"field", "type"}]``).
A source that declares none has an *open* schema: later operators may name any field,
its type is unknown and type checks on it are skipped (the engine reads such values as
they come). The first operator whose output is computed from configuration alone
(Aggregate, SelectFields) closes the schema again.

Operators are plug-ins: an :class:`Operator` subclass per ``className``, registered in
:data:`OPERATORS` by :func:`register`. The streaming engine reuses the same registry.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from datamill.domain.common import NAME_RULE, NAME_RULE_TEXT, Model, location_text
from datamill.domain.expressions import (
    INTEGRAL,
    JSON_HOLDERS,
    NUMERIC,
    ORDERED,
    Compiled,
    ExpressionError,
    FieldRef,
    FieldType,
    Loose,
    Scope,
    Symbol,
    ValueType,
    compile_condition,
    compile_expression,
    compile_predicate,
    fits,
    is_loose,
    is_numeric,
    parse_path,
    unify,
)
from datamill.errors import DatamillError, E

__all__ = ["FieldType", "Symbol"]

MAX_OPERATORS = 200
MAX_FIELDS = 256
GRAPH = "$graph"
"""The ``check_info`` key of problems with the whole graph rather than one operator."""
DEFINITION = "$definition"
"""The ``check_info`` key of problems with ``definition``."""
OPERATOR_ID_RULE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
BASIC = "configs.basicConfigs"
ADVANCE = "configs.advanceConfigs"
WINDOW_START = "windowStart"
WINDOW_END = "windowEnd"


# =========================================================================== the job body


def _check_operator_id(value: str) -> str:
    if not OPERATOR_ID_RULE.fullmatch(value):
        raise PydanticCustomError(
            "E18703",
            "invalid operator id '{value}': 1-64 letters, digits, '_', '-', '.' or ':'",
            {"value": value[:80]},
        )
    return value


class JobType(StrEnum):
    API = "API"
    IDE = "IDE"
    IOTDA_API = "IOTDA_API"


class JobInputType(StrEnum):
    PIPELINE_DATA = "PIPELINE_DATA"
    ASSET_DATA = "ASSET_DATA"


class Definition(Model):
    jobName: str = Field(min_length=1, max_length=128, description="the job's display name")
    jobDescription: str = Field("", max_length=1024)
    jobType: JobType = JobType.API
    jobInputType: JobInputType = JobInputType.PIPELINE_DATA

    @field_validator("jobName")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("E18703", "definition.jobName is blank")
        return value


class Point(Model):
    """Where the operator is drawn in the editor; no meaning to the pipeline."""

    model_config = ConfigDict(strict=True)

    x: float
    y: float


class OperatorRef(Model):
    id: str = Field(max_length=64)


class Configs(Model):
    """An operator's configuration, free-form until the check parses it by ``className``."""

    basicConfigs: dict[str, Any] | None = None
    advanceConfigs: dict[str, Any] | None = None


class OperatorInstance(Model):
    id: str = Field(max_length=64, description="unique in the job; 1-64 of A-Z a-z 0-9 _ - . :")
    className: str = Field(max_length=64, description="the operator class, e.g. Filter")
    point: Point | None = None
    fromOperators: list[OperatorRef] | None = Field(
        None, max_length=64, description="the operators whose output this one reads"
    )
    configs: Configs | None = None

    @field_validator("id")
    @classmethod
    def _id_rule(cls, value: str) -> str:
        return _check_operator_id(value)

    @property
    def inputs(self) -> list[str]:
        return [ref.id for ref in self.fromOperators or []]


class StreamingRuntime(Model):
    """How the engine runs the job (seed 003's runtime settings); numbers and flags are
    taken as JSON numbers and booleans only (strict), never converted from strings."""

    model_config = ConfigDict(strict=True)

    parallelism: int | None = Field(None, ge=1, le=1024)
    checkpointIntervalSeconds: int | float = Field(
        10,
        ge=0.1,
        le=86400,
        description="seconds between checkpoints (fractions allowed); a file sink's output "
        "becomes visible at each checkpoint",
    )
    restartWhenException: bool = Field(False, description="restart the job when it fails")
    resumeMaxNum: int = Field(
        -1, ge=-1, le=1000, description="most restarts per hour; -1 = unlimited (not 0)"
    )
    outOfOrdernessSeconds: int = Field(
        2, ge=0, le=86400, description="event-time watermark = max event time - this"
    )

    @field_validator("resumeMaxNum")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise PydanticCustomError(
                "E18703", "runtime.resumeMaxNum is -1 (unlimited) or greater than 0"
            )
        return value


class StreamingJobBody(Model):
    """The body of create and update (seed 000): an update replaces the whole job."""

    definition: Definition
    operatorInstances: list[OperatorInstance] = Field(
        default_factory=list, max_length=MAX_OPERATORS
    )
    runtime: StreamingRuntime | None = None


# =========================================================================== states


class JobState(StrEnum):
    DRAFT = "DRAFT"
    READY = "READY"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    RESTARTING = "RESTARTING"


ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING, JobState.STOPPING, JobState.RESTARTING})
"""States in which the engine owns the job: it cannot be edited or deleted."""
STARTABLE = frozenset({JobState.READY, JobState.STOPPED})
STOPPABLE = frozenset({JobState.STARTING, JobState.RUNNING, JobState.RESTARTING})
EDITABLE = frozenset(JobState) - ACTIVE

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.DRAFT: frozenset({JobState.DRAFT, JobState.READY}),
    JobState.READY: frozenset({JobState.DRAFT, JobState.READY, JobState.STARTING}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.STOPPING}),
    JobState.RUNNING: frozenset({JobState.STOPPING, JobState.FAILED, JobState.RESTARTING}),
    JobState.RESTARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.STOPPING}),
    JobState.STOPPING: frozenset({JobState.STOPPED}),
    JobState.STOPPED: frozenset({JobState.DRAFT, JobState.READY, JobState.STARTING}),
    JobState.FAILED: frozenset({JobState.DRAFT, JobState.READY}),
}
"""Every allowed state change. Saving moves an editable job to DRAFT or READY; start and
stop are the API's actions; the engine moves STARTING/RESTARTING to RUNNING, a running job
to RESTARTING (``restartWhenException``) or FAILED, and STOPPING to STOPPED."""


def allowed(before: JobState, after: JobState) -> bool:
    return after in TRANSITIONS[before]


def _conflict(job_id: str, state: JobState, rule: str) -> DatamillError:
    return DatamillError(
        E.STREAMING_STATE_CONFLICT, f"streaming job '{job_id}' is {state.value}; {rule}"
    )


def state_after_save(job_id: str, state: JobState, passed: bool) -> JobState:
    """The state of a job saved (``passed``: checked without problems)."""
    if state in ACTIVE:
        raise _conflict(job_id, state, "stop it before editing it")
    return JobState.READY if passed else JobState.DRAFT


def state_after_start(job_id: str, state: JobState) -> JobState:
    if state not in STARTABLE:
        hint = (
            " (save it with check=true first)" if state in (JobState.DRAFT, JobState.FAILED) else ""
        )
        raise _conflict(job_id, state, f"only a READY or STOPPED job can be started{hint}")
    return JobState.STARTING


def state_after_stop(job_id: str, state: JobState) -> JobState:
    if state not in STOPPABLE:
        raise _conflict(job_id, state, "only a STARTING, RUNNING or RESTARTING job can be stopped")
    return JobState.STOPPING


def check_delete(job_id: str, state: JobState) -> None:
    if state in ACTIVE:
        raise _conflict(job_id, state, "stop it before deleting it")


def check_transition(job_id: str, before: JobState, after: JobState) -> None:
    """Refuse a state change :data:`TRANSITIONS` does not allow (for the engine's moves)."""
    if not allowed(before, after):
        raise _conflict(job_id, before, f"it cannot become {after.value}")


# =========================================================================== responses

CheckInfo = dict[str, list[str]]


class SaveResult(Model):
    """The answer to create and update (seed 000)."""

    job_id: str = Field(min_length=1, max_length=100)
    job_state: JobState
    status: str = Field(description="success, or failed when the check found problems")
    check_info: CheckInfo = Field(
        description="operator id (or $graph, $definition) -> its problems; empty when the "
        "job checked without problems or was saved as a draft"
    )


class ActionResult(Model):
    job_id: str
    job_state: JobState
    status: str = Field(description="success")


class StreamingJob(Model):
    job_id: str
    job_state: JobState
    definition: Definition
    operatorInstances: list[OperatorInstance]
    runtime: StreamingRuntime
    check_info: CheckInfo = Field(description="the problems found by the last check")
    stateMessage: str | None = Field(None, description="why the job is in its state")
    createdAt: datetime
    updatedAt: datetime
    stateChangedAt: datetime
    startedAt: datetime | None
    stoppedAt: datetime | None


class IngestResult(Model):
    job_id: str
    accepted: int = Field(description="the records appended to the job's ingest log")


class CheckpointInfo(Model):
    epoch: int
    time: datetime | None


class OperatorMetrics(Model):
    className: str
    recordsIn: int
    recordsOut: int
    stateRows: int | None = None
    lateRecords: int | None = None


class SourceMetrics(Model):
    lag: int | None = Field(description="records available but not yet read (estimate)")
    position: dict[str, Any] | None = None


class StreamingMetrics(Model):
    """What the engine last reported (about once a second and at every checkpoint)."""

    job_id: str
    job_state: JobState
    epoch: int | None = Field(None, description="the checkpoint epoch being processed")
    batches: int = Field(0, description="micro-batches since the engine process started")
    watermark: datetime | None = None
    maxEventTime: datetime | None = None
    lateRecords: int = 0
    stateRows: int = 0
    stateBytes: int = Field(0, description="size of the job's state database")
    lastCheckpoint: CheckpointInfo | None = None
    operators: dict[str, OperatorMetrics] = Field(default_factory=dict)
    sources: dict[str, SourceMetrics] = Field(default_factory=dict)
    updatedAt: datetime | None = Field(None, description="when the engine wrote these figures")


class JobSort(StrEnum):
    """List orders: a field, with ``-`` for descending."""

    createdAt = "createdAt"
    createdAtDesc = "-createdAt"
    updatedAt = "updatedAt"
    updatedAtDesc = "-updatedAt"
    jobName = "jobName"
    jobNameDesc = "-jobName"


class StreamingJobSummary(Model):
    job_id: str
    jobName: str
    jobType: JobType
    jobInputType: JobInputType
    job_state: JobState
    createdAt: datetime
    updatedAt: datetime


# =========================================================================== schemas


@dataclass
class Schema:
    """The fields of the records an operator outputs.

    ``open``: more fields may exist than those listed (their types are unknown);
    ``event_time``: the TIMESTAMP field carrying event time, if one is known.
    """

    fields: dict[str, ValueType] = dataclass_field(default_factory=dict)
    open: bool = False
    event_time: str | None = None

    @classmethod
    def unknown(cls) -> Schema:
        return cls({}, open=True)

    @property
    def scope(self) -> Scope:
        return Scope(self.fields, self.open)

    def type_of(self, name: str) -> ValueType | None:
        if name in self.fields:
            return self.fields[name]
        return Loose.ANY if self.open else None

    def with_fields(self, added: dict[str, ValueType]) -> Schema:
        """This schema with ``added`` fields (replacing those of the same name)."""
        fields = {**self.fields, **added}
        event_time = self.event_time
        if event_time in added and added[event_time] not in (FieldType.TIMESTAMP, Loose.ANY):
            event_time = None
        return Schema(fields, self.open, event_time)

    def listing(self) -> str:
        names = ", ".join(list(self.fields)[:20]) or "none"
        more = ", …" if len(self.fields) > 20 else ""
        return f"the input's fields are {names}{more}"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class Problems(list[Problem]):
    """The problems of one operator, collected while its output schema is computed."""

    def add(self, path: str, message: str) -> None:
        self.append(Problem(path, message))

    def empty(self, path: str, hint: str = "") -> None:
        self.add(path, "empty" + (f" ({hint})" if hint else ""))


def merge(inputs: Sequence[tuple[str, Schema]]) -> tuple[Schema, Problems]:
    """The schema of an operator reading several inputs (their union, which must agree)."""
    problems = Problems()
    if not inputs:
        return Schema.unknown(), problems
    first_id, first = inputs[0]
    if len(inputs) == 1:
        return first, problems
    fields = dict(first.fields)
    open_ = any(s.open for _, s in inputs)
    times = {s.event_time for _, s in inputs}
    for other_id, other in inputs[1:]:
        for name, kind in other.fields.items():
            if name in fields:
                both = unify(fields[name], kind)
                if both is None:
                    problems.add(
                        "fromOperators",
                        f"field '{name}' is {fields[name]} in '{first_id}' but {kind} in "
                        f"'{other_id}'",
                    )
                    both = Loose.ANY
                fields[name] = both
            else:
                fields[name] = kind
        if not open_ and set(other.fields) != set(first.fields):
            problems.add(
                "fromOperators",
                f"the inputs '{first_id}' and '{other_id}' have different fields; an operator "
                "reading several inputs needs the same fields in each",
            )
    event_time = times.pop() if len(times) == 1 else None
    return Schema(fields, open_, event_time), problems


# =========================================================================== config models


def _field_list(value: Any) -> Any:
    """Field lists come as a JSON list or as one comma-separated string (seed: ``""``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.strip().upper() in ("TRUE", "FALSE"):
        return value.strip().upper() == "TRUE"
    return value


FieldList = Annotated[list[Annotated[str, Field(max_length=128)]], BeforeValidator(_field_list)]
Flag = Annotated[bool | None, BeforeValidator(_flag)]
ShortText = Annotated[str | None, Field(max_length=256)]
Text = Annotated[str | None, Field(max_length=4096)]
Scalar = str | int | float | bool | None


class Advance(Model):
    """``advanceConfigs`` every operator accepts."""

    parallelism: int | None = Field(None, description="parallel tasks of this operator")


class Basic(Model):
    """``basicConfigs`` every operator accepts."""

    name: ShortText = Field(None, description="the operator's display name")


class OperatorConfig(Model):
    basicConfigs: Basic = Field(default_factory=Basic)
    advanceConfigs: Advance = Field(default_factory=Advance)


class Role(StrEnum):
    SOURCE = "source"
    TRANSFORM = "transform"
    SINK = "sink"


C = TypeVar("C", bound=OperatorConfig)


class Operator(ABC, Generic[C]):
    """One kind of operator, chosen by ``className``.

    A subclass declares its ``class_name``, its ``role`` and its ``config_model`` (the
    shape of ``configs``), and computes its output schema from its inputs and config.
    """

    class_name: ClassVar[str]
    role: ClassVar[Role] = Role.TRANSFORM
    merge_inputs: ClassVar[bool] = True
    """True: several inputs are merged into one schema first (sinks take them apart)."""
    config_model: type[C]

    def parse_config(self, configs: Configs | None) -> tuple[C | None, Problems]:
        """The typed config, or None and the problems found parsing it."""
        data = {
            "basicConfigs": (configs.basicConfigs if configs else None) or {},
            "advanceConfigs": (configs.advanceConfigs if configs else None) or {},
        }
        try:
            return self.config_model.model_validate(data), Problems()
        except ValidationError as exc:
            problems = Problems()
            for error in exc.errors():
                kind = str(error.get("type", ""))
                message = "unknown field" if kind == "extra_forbidden" else str(error["msg"])
                problems.add(location_text(tuple(error["loc"]), "configs"), message)
            return None, problems

    @abstractmethod
    def output_schema(self, inputs: Sequence[Schema], config: C) -> tuple[Schema, Problems]:
        """The schema of the records this operator outputs, and the problems found.

        ``inputs`` holds one merged schema unless :attr:`merge_inputs` is false; a sink
        returns an empty schema. Problems name their path from ``configs`` on.
        """


OPERATORS: dict[str, Operator[Any]] = {}
"""The registry: className -> operator."""

OperatorClass = TypeVar("OperatorClass", bound=type[Operator[Any]])


def register(cls: OperatorClass) -> OperatorClass:
    """Class decorator adding an operator to :data:`OPERATORS`."""
    OPERATORS[cls.class_name] = cls()
    return cls


# --------------------------------------------------------------------------- shared checks


def check_new_name(problems: Problems, path: str, name: str | None) -> str | None:
    """A field name an operator creates: returns it when it is valid."""
    if name is None or not name.strip():
        problems.empty(path)
        return None
    if not NAME_RULE.fullmatch(name):
        problems.add(path, f"invalid field name '{name[:80]}': use {NAME_RULE_TEXT}")
        return None
    return name


def check_input_field(
    problems: Problems, path: str, schema: Schema, name: str | None
) -> ValueType | None:
    """The type of input field ``name``, or None (with a problem) when it does not exist."""
    if name is None or not name.strip():
        problems.empty(path)
        return None
    kind = schema.type_of(name)
    if kind is None:
        problems.add(path, f"field '{name[:80]}' does not exist upstream; {schema.listing()}")
    return kind


def check_field_list(
    problems: Problems, path: str, schema: Schema, names: Sequence[str], *, required: bool
) -> dict[str, ValueType]:
    found: dict[str, ValueType] = {}
    if not names and required:
        problems.empty(path, "name at least one field")
    for i, name in enumerate(names):
        if name in found:
            problems.add(f"{path}[{i}]", f"field '{name}' is listed twice")
            continue
        kind = check_input_field(problems, f"{path}[{i}]", schema, name)
        if kind is not None:
            found[name] = kind
    return found


Parsed = TypeVar("Parsed")


def parse_or_report(
    problems: Problems, path: str, text: str | None, parse: Callable[[str], Parsed]
) -> Parsed | None:
    """``parse(text)``; None, with a problem at ``path``, when ``text`` is empty or
    ``parse`` raises :class:`ExpressionError`."""
    if text is None or not text.strip():
        problems.empty(path)
        return None
    try:
        return parse(text)
    except ExpressionError as exc:
        problems.add(path, str(exc))
        return None


def check_path(problems: Problems, path: str, schema: Schema, text: str | None) -> FieldRef | None:
    """A path into an input field (``payload.items[0]``): the field must exist and hold
    JSON (MAP, ARRAY or STRING) when keys follow it."""
    ref = parse_or_report(problems, path, text, parse_path)
    if ref is None:
        return None
    kind = check_input_field(problems, path, schema, ref.name)
    if kind is not None and ref.keys and kind not in JSON_HOLDERS and not is_loose(kind):
        problems.add(path, f"field '{ref.name}' is {kind}; a path reads into MAP, ARRAY or STRING")
    return ref


def check_positive(problems: Problems, path: str, value: int | None, what: str) -> None:
    if value is not None and value <= 0:
        problems.add(path, f"{what} must be greater than 0")


def check_parallelism(problems: Problems, advance: Advance) -> None:
    if advance.parallelism is not None and not 1 <= advance.parallelism <= 1024:
        problems.add(f"{ADVANCE}.parallelism", "must be 1-1024")


def compile_or_report(
    problems: Problems, path: str, text: str | None, schema: Schema, *, predicate: bool = False
) -> Compiled | None:
    compile_text = compile_predicate if predicate else compile_expression
    return parse_or_report(problems, path, text, lambda text: compile_text(text, schema.scope))


def _one(inputs: Sequence[Schema]) -> Schema:
    return inputs[0] if inputs else Schema.unknown()


# =========================================================================== operators


class TypedField(Model):
    """A field an operator adds: its name and type (the base of the ``*Field`` models)."""

    field: ShortText = None
    type: FieldType | None = None


def check_typed_field(problems: Problems, path: str, declared: TypedField) -> str | None:
    """Checks a field an operator adds (``path`` is the entry's): a valid new name and a
    type. Returns the name when it is valid."""
    name = check_new_name(problems, f"{path}.field", declared.field)
    if declared.type is None:
        problems.empty(f"{path}.type")
    return name


def add_field(
    problems: Problems,
    path: str,
    fields: dict[str, ValueType],
    name: str | None,
    kind: ValueType,
    twice: str,
) -> None:
    """Adds field ``name`` (unless None) to ``fields``; when it is there already, the
    entry at ``path`` gets the problem "field 'name' is <twice> twice" (and wins)."""
    if name is None:
        return
    if name in fields:
        problems.add(f"{path}.field", f"field '{name}' is {twice} twice")
    fields[name] = kind


class SourceField(TypedField):
    """A field the records pushed into the pipeline carry."""


class PipelineSourceBasic(Basic):
    dataSourceId: ShortText = Field(None, description="a data source to read (MQTT, Kafka …)")
    fields: list[SourceField] | None = Field(
        None, max_length=MAX_FIELDS, description="the fields of the records; none = open"
    )
    eventTimeField: ShortText = Field(None, description="the TIMESTAMP field of event time")


class PipelineSourceConfig(OperatorConfig):
    basicConfigs: PipelineSourceBasic = Field(default_factory=PipelineSourceBasic)


@register
class PipelineSource(Operator[PipelineSourceConfig]):
    """The records pushed into the pipeline. Declares their fields (or none: open schema)."""

    class_name = "PipelineSource"
    role = Role.SOURCE
    config_model = PipelineSourceConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: PipelineSourceConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        basic = config.basicConfigs
        schema = Schema(open=not basic.fields)
        for i, declared in enumerate(basic.fields or []):
            path = f"{BASIC}.fields[{i}]"
            name = check_typed_field(problems, path, declared)
            add_field(problems, path, schema.fields, name, declared.type or Loose.ANY, "declared")
        if basic.eventTimeField:
            path = f"{BASIC}.eventTimeField"
            kind = schema.type_of(basic.eventTimeField)
            if kind is None:
                problems.add(path, f"'{basic.eventTimeField[:80]}' is not a declared field")
            elif kind not in (FieldType.TIMESTAMP, Loose.ANY):
                problems.add(path, f"'{basic.eventTimeField}' is {kind}; event time is a TIMESTAMP")
            else:
                schema.fields[basic.eventTimeField] = FieldType.TIMESTAMP
                schema.event_time = basic.eventTimeField
        return schema, problems


class Relationship(StrEnum):
    AND = "AND"
    OR = "OR"


class Condition(Model):
    leftValue: Text = Field(None, description="an expression, usually a field")
    symbol: Symbol | None = None
    rightValue: Scalar = Field(
        None, description="an expression ('text' quoted); for IN a list: 1, 2, 3"
    )


class FilterBasic(Basic):
    conditionRelationship: Relationship | None = Relationship.AND
    conditions: list[Condition] | None = Field(None, max_length=64)


class FilterConfig(OperatorConfig):
    basicConfigs: FilterBasic = Field(default_factory=FilterBasic)


def scalar_text(value: Scalar) -> str | None:
    """A JSON scalar given where an expression is expected, as expression text."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return value


@register
class Filter(Operator[FilterConfig]):
    """Keeps the records meeting all (AND) or any (OR) of its conditions."""

    class_name = "Filter"
    config_model = FilterConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: FilterConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema = _one(inputs)
        self.conditions(problems, schema, config)
        return schema, problems

    @staticmethod
    def conditions(problems: Problems, schema: Schema, config: FilterConfig) -> list[Compiled]:
        """The compiled conditions (the engine joins them with conditionRelationship)."""
        basic = config.basicConfigs
        if basic.conditionRelationship is None:
            problems.empty(f"{BASIC}.conditionRelationship", "AND or OR")
        if not basic.conditions:
            problems.empty(f"{BASIC}.conditions", "give at least one condition")
        compiled = []
        for i, condition in enumerate(basic.conditions or []):
            path = f"{BASIC}.conditions[{i}]"
            left, right = condition.leftValue, scalar_text(condition.rightValue)
            if left is None or not left.strip():
                problems.empty(f"{path}.leftValue")
            if condition.symbol is None:
                problems.empty(f"{path}.symbol")
                continue
            needs_right = condition.symbol not in (Symbol.IS_NULL, Symbol.NOT_NULL)
            if needs_right and (right is None or not right.strip()):
                problems.empty(f"{path}.rightValue")
            if left is None or not left.strip() or (needs_right and not (right or "").strip()):
                continue
            try:
                compiled.append(compile_condition(left, condition.symbol, right, schema.scope))
            except ExpressionError as exc:
                problems.add(f"{path}.{exc.part}" if exc.part else path, str(exc))
        return compiled


class FlatField(TypedField):
    path: Text = None


class FlatBasic(Basic):
    multiRecordsPath: Text = Field(
        None, description="path to an ARRAY whose elements become one record each"
    )
    flatFieldConfig: list[FlatField] | None = Field(None, max_length=MAX_FIELDS)


class FlatConfig(OperatorConfig):
    basicConfigs: FlatBasic = Field(default_factory=FlatBasic)


@register
class Flat(Operator[FlatConfig]):
    """Lifts values out of nested JSON into typed fields.

    Each ``flatFieldConfig`` entry reads ``path`` (``payload.sensor.temp``) into ``field``
    of ``type``. With ``multiRecordsPath`` (a path to an ARRAY), each element becomes one
    record and the paths start at the element (``temp``, ``sensor.id``). The output has
    the input's fields plus the new ones.
    """

    class_name = "Flat"
    config_model = FlatConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: FlatConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema, basic = _one(inputs), config.basicConfigs
        per_element = bool(basic.multiRecordsPath and basic.multiRecordsPath.strip())
        if per_element:
            check_path(problems, f"{BASIC}.multiRecordsPath", schema, basic.multiRecordsPath)
        if not basic.flatFieldConfig:
            problems.empty(f"{BASIC}.flatFieldConfig", "give at least one field")
        added: dict[str, ValueType] = {}
        for i, flat in enumerate(basic.flatFieldConfig or []):
            path = f"{BASIC}.flatFieldConfig[{i}]"
            name = check_typed_field(problems, path, flat)
            if per_element:
                parse_or_report(problems, f"{path}.path", flat.path, parse_path)
            else:
                check_path(problems, f"{path}.path", schema, flat.path)
            add_field(problems, path, added, name, flat.type or Loose.ANY, "flattened")
        return schema.with_fields(added), problems


class NestValueType(StrEnum):
    FIELD = "FIELD"
    CONSTANT = "CONSTANT"
    PATH = "PATH"


class NestField(Model):
    path: ShortText = Field(None, description="where in the MAP: key or key.key")
    type: NestValueType | None = None
    value: Scalar = Field(
        None, description="FIELD: an input field; PATH: a path into one; CONSTANT: the value"
    )


class NestFieldConfig(Model):
    field: ShortText = None
    type: FieldType | None = FieldType.MAP
    nestFields: list[NestField] | None = Field(None, max_length=MAX_FIELDS)


class NestBasic(Basic):
    nestFieldConfig: NestFieldConfig | None = None


class NestConfig(OperatorConfig):
    basicConfigs: NestBasic = Field(default_factory=NestBasic)


MAP_PATH = re.compile(r"^[A-Za-z0-9_-]{1,128}(\.[A-Za-z0-9_-]{1,128}){0,7}$")


@register
class Nest(Operator[NestConfig]):
    """Builds one MAP field from input fields, paths into them and constants."""

    class_name = "Nest"
    config_model = NestConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: NestConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema, nest = _one(inputs), config.basicConfigs.nestFieldConfig
        path = f"{BASIC}.nestFieldConfig"
        if nest is None:
            problems.empty(path)
            return schema, problems
        name = check_new_name(problems, f"{path}.field", nest.field)
        if nest.type is None:
            problems.empty(f"{path}.type", "MAP")
        elif nest.type != FieldType.MAP:
            problems.add(f"{path}.type", f"a nested field is a MAP, not {nest.type}")
        if not nest.nestFields:
            problems.empty(f"{path}.nestFields", "give at least one value")
        keys: list[str] = []
        for i, item in enumerate(nest.nestFields or []):
            item_path = f"{path}.nestFields[{i}]"
            self.check_key(problems, f"{item_path}.path", item.path, keys)
            if item.type is None:
                problems.empty(f"{item_path}.type", "FIELD, CONSTANT or PATH")
            elif item.type == NestValueType.CONSTANT:
                if item.value is None:
                    problems.empty(f"{item_path}.value")
            elif not isinstance(item.value, str):
                what = "an input field" if item.type == NestValueType.FIELD else "a path"
                if item.value is None:
                    problems.empty(f"{item_path}.value", what)
                else:
                    problems.add(f"{item_path}.value", f"must name {what}")
            elif item.type == NestValueType.FIELD:
                check_input_field(problems, f"{item_path}.value", schema, item.value)
            else:
                check_path(problems, f"{item_path}.value", schema, item.value)
        if name is None:
            return schema, problems
        return schema.with_fields({name: FieldType.MAP}), problems

    @staticmethod
    def check_key(problems: Problems, path: str, key: str | None, keys: list[str]) -> None:
        if key is None or not key.strip():
            problems.empty(path)
            return
        if not MAP_PATH.fullmatch(key):
            problems.add(path, f"'{key[:80]}' is not a key path such as a or a.b (A-Z a-z 0-9 _ -)")
            return
        for other in keys:
            if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                problems.add(path, f"'{key}' collides with '{other}'")
                return
        keys.append(key)


class MapField(TypedField):
    expression: Text = None


class MapBasic(Basic):
    mapFieldConfig: list[MapField] | None = Field(None, max_length=MAX_FIELDS)


class MapConfig(OperatorConfig):
    basicConfigs: MapBasic = Field(default_factory=MapBasic)


@register
class Map(Operator[MapConfig]):
    """Computes fields from expressions over the input (see :mod:`.expressions`).

    Every expression sees the input record; a field of an input's name replaces it.
    """

    class_name = "Map"
    config_model = MapConfig

    def output_schema(self, inputs: Sequence[Schema], config: MapConfig) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema = _one(inputs)
        fields = config.basicConfigs.mapFieldConfig
        if not fields:
            problems.empty(f"{BASIC}.mapFieldConfig", "give at least one field")
        added: dict[str, ValueType] = {}
        for i, mapped in enumerate(fields or []):
            path = f"{BASIC}.mapFieldConfig[{i}]"
            name = check_typed_field(problems, path, mapped)
            compiled = compile_or_report(problems, f"{path}.expression", mapped.expression, schema)
            if (
                compiled is not None
                and mapped.type is not None
                and not fits(compiled.type, mapped.type)
            ):
                problems.add(
                    f"{path}.type",
                    f"the expression gives {compiled.type}, which does not fit {mapped.type}",
                )
            kind = mapped.type or (compiled.type if compiled else Loose.ANY)
            add_field(problems, path, added, name, kind, "computed")
        return schema.with_fields(added), problems


class WindowType(StrEnum):
    TumblingTimeWindows = "TumblingTimeWindows"
    SlidingTimeWindows = "SlidingTimeWindows"
    SessionWindows = "SessionWindows"


class TimeType(StrEnum):
    ProcessingTime = "ProcessingTime"
    EventTime = "EventTime"


class WindowAssigner(Model):
    """Window sizes are in seconds."""

    timeType: TimeType | None = None
    size: int | None = Field(None, description="window length (tumbling, sliding)")
    slide: int | None = Field(None, description="how far a sliding window moves")
    offset: int | None = Field(None, description="shifts window starts (|offset| < size)")
    gap: int | None = Field(None, description="inactivity closing a session window")
    timeField: ShortText = Field(None, description="event time field; default: the source's")


class AggregateType(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    AVG = "AVG"
    MAX = "MAX"
    MIN = "MIN"
    FIRST = "FIRST"
    LAST = "LAST"
    COUNT_DISTINCT = "COUNT_DISTINCT"


NUMERIC_RESULTS = frozenset(
    {AggregateType.SUM, AggregateType.AVG, AggregateType.COUNT, AggregateType.COUNT_DISTINCT}
)


class AggregateField(Model):
    field: ShortText = Field(None, description="the output field")
    type: FieldType | None = Field(None, description="the output field's type")
    aggregateField: ShortText = Field(None, description="the input field aggregated")
    aggregateType: AggregateType | None = None


class EventConditions(Model):
    eventOnCondition: Text = Field(None, description="condition opening an event window")
    eventOffCondition: Text = Field(None, description="condition closing it")


class AggregateBasic(Basic):
    keyFields: FieldList = Field(default_factory=list)
    windowsType: WindowType | None = None
    windowAssigner: WindowAssigner | None = None
    aggregateFields: list[AggregateField] | None = Field(None, max_length=MAX_FIELDS)
    eventConditions: EventConditions | None = None


class StateAdvance(Advance):
    ttlTime: int | None = Field(None, description="seconds idle state is kept")


class AggregateConfig(OperatorConfig):
    basicConfigs: AggregateBasic = Field(default_factory=AggregateBasic)
    advanceConfigs: StateAdvance = Field(default_factory=StateAdvance)


def aggregate_result(kind: AggregateType, source: ValueType) -> ValueType:
    """The type an aggregate of a ``source`` field gives."""
    if kind in (AggregateType.COUNT, AggregateType.COUNT_DISTINCT):
        return FieldType.LONG
    if kind == AggregateType.AVG:
        return FieldType.DOUBLE
    if kind == AggregateType.SUM:
        if is_loose(source):
            return Loose.ANY
        return FieldType.LONG if source in INTEGRAL else FieldType.DOUBLE
    return source


@register
class Aggregate(Operator[AggregateConfig]):
    """Aggregates records per key over time windows (tumbling, sliding or session).

    Output: the key fields, ``windowStart`` and ``windowEnd`` (TIMESTAMP) and one field
    per aggregate. Event-time windows need a TIMESTAMP field (``windowAssigner.timeField``
    or the source's ``eventTimeField``); their output's event time is ``windowEnd``.
    """

    class_name = "Aggregate"
    config_model = AggregateConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: AggregateConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        check_positive(problems, f"{ADVANCE}.ttlTime", config.advanceConfigs.ttlTime, "ttlTime")
        schema, basic = _one(inputs), config.basicConfigs
        keys = check_field_list(
            problems, f"{BASIC}.keyFields", schema, basic.keyFields, required=False
        )
        for key, key_type in keys.items():
            if key_type in (FieldType.MAP, FieldType.ARRAY):
                problems.add(f"{BASIC}.keyFields", f"cannot group by '{key}', a {key_type}")
        event_time = self.window(problems, schema, basic)
        out: dict[str, ValueType] = {**keys, WINDOW_START: FieldType.TIMESTAMP}
        out[WINDOW_END] = FieldType.TIMESTAMP
        if not basic.aggregateFields:
            problems.empty(f"{BASIC}.aggregateFields", "give at least one aggregate")
        for i, aggregate in enumerate(basic.aggregateFields or []):
            path = f"{BASIC}.aggregateFields[{i}]"
            name = check_new_name(problems, f"{path}.field", aggregate.field)
            kind = self.aggregate(problems, path, schema, aggregate)
            if name is None:
                continue
            if name in out:
                problems.add(f"{path}.field", f"'{name}' is already an output field")
                continue
            out[name] = aggregate.type or kind
        conditions = basic.eventConditions or EventConditions()
        on, off = conditions.eventOnCondition, conditions.eventOffCondition
        on_given, off_given = bool(on and on.strip()), bool(off and off.strip())
        if on_given != off_given:
            missing = "eventOffCondition" if on_given else "eventOnCondition"
            problems.empty(f"{BASIC}.eventConditions.{missing}", "give both conditions or none")
        for name, text in (("eventOnCondition", on), ("eventOffCondition", off)):
            if text and text.strip():
                path = f"{BASIC}.eventConditions.{name}"
                compile_or_report(problems, path, text, schema, predicate=True)
        return Schema(out, open=False, event_time=WINDOW_END if event_time else None), problems

    @staticmethod
    def window(problems: Problems, schema: Schema, basic: AggregateBasic) -> str | None:
        """Checks the window; returns the event-time field it uses, if any."""
        if basic.windowsType is None:
            problems.empty(f"{BASIC}.windowsType", ", ".join(WindowType))
        assigner, path = basic.windowAssigner, f"{BASIC}.windowAssigner"
        if assigner is None:
            problems.empty(path, "a window needs timeType and a size")
            return None
        kind = basic.windowsType
        if kind in (WindowType.TumblingTimeWindows, WindowType.SlidingTimeWindows):
            if assigner.size is None:
                problems.empty(f"{path}.size", f"a {kind} window needs a size in seconds")
            check_positive(problems, f"{path}.size", assigner.size, "size")
            size = assigner.size or 0
            if assigner.offset is not None and size > 0 and abs(assigner.offset) >= size:
                problems.add(f"{path}.offset", "|offset| must be less than size")
        if kind == WindowType.SlidingTimeWindows:
            if assigner.slide is None:
                problems.empty(f"{path}.slide", "a sliding window needs a slide in seconds")
            check_positive(problems, f"{path}.slide", assigner.slide, "slide")
        if kind == WindowType.SessionWindows:
            if assigner.gap is None:
                problems.empty(f"{path}.gap", "a session window needs a gap in seconds")
            check_positive(problems, f"{path}.gap", assigner.gap, "gap")
        if assigner.timeType is None:
            problems.empty(f"{path}.timeType", "ProcessingTime or EventTime")
        if assigner.timeType != TimeType.EventTime:
            return None
        name = assigner.timeField or schema.event_time
        if not name:
            if schema.open:
                problems.empty(
                    f"{path}.timeField",
                    "event time needs a TIMESTAMP field: set timeField or the source's "
                    "eventTimeField",
                )
                return None
            problems.empty(
                f"{path}.timeField",
                "event time needs a TIMESTAMP field and the input has no event time",
            )
            return None
        kind_of = check_input_field(problems, f"{path}.timeField", schema, name)
        if kind_of is not None and kind_of not in (FieldType.TIMESTAMP, Loose.ANY):
            problems.add(f"{path}.timeField", f"'{name}' is {kind_of}; event time is a TIMESTAMP")
        return name

    @staticmethod
    def aggregate(
        problems: Problems, path: str, schema: Schema, aggregate: AggregateField
    ) -> ValueType:
        """Checks one aggregate; returns the type it gives."""
        kind, declared, name = aggregate.aggregateType, aggregate.type, aggregate.aggregateField
        if kind is None:
            problems.empty(f"{path}.aggregateType", ", ".join(AggregateType))
        if declared is None:
            problems.empty(f"{path}.type")
        elif kind in NUMERIC_RESULTS and declared not in NUMERIC:
            problems.add(
                f"{path}.type",
                f"{kind} gives a number; declare INTEGER, LONG, FLOAT or DOUBLE, not {declared}",
            )
        source: ValueType | None = Loose.ANY
        if not (kind == AggregateType.COUNT and not (name or "").strip()):
            source = check_input_field(problems, f"{path}.aggregateField", schema, name)
        if kind is None or source is None:
            return declared or Loose.ANY
        if kind in (AggregateType.SUM, AggregateType.AVG) and not is_numeric(source):
            problems.add(
                f"{path}.aggregateField", f"{kind} needs a number field; '{name}' is {source}"
            )
        elif kind in (AggregateType.MAX, AggregateType.MIN) and not (
            source in ORDERED or is_loose(source)
        ):
            problems.add(
                f"{path}.aggregateField",
                f"{kind} needs a number, STRING or TIMESTAMP field; '{name}' is {source}",
            )
        else:
            result = aggregate_result(kind, source)
            if declared is None:
                return result
            fitting = is_loose(result) or result == declared
            fitting = fitting or (result in NUMERIC and declared in NUMERIC)
            if kind not in NUMERIC_RESULTS and not fitting:
                problems.add(f"{path}.type", f"{kind} of '{name}' gives {result}, not {declared}")
        return declared or Loose.ANY


class DeduplicatePeriod(Model):
    isUseEventTime: Flag = Field(None, description="measure the period in event time")
    period: int | None = Field(None, description="seconds a seen record suppresses repeats")


class DeduplicateBasic(Basic):
    keyFields: FieldList = Field(default_factory=list)
    relationship: Relationship | None = Relationship.AND
    deduplicateFields: FieldList = Field(default_factory=list)


class DeduplicateAdvance(StateAdvance):
    deduplicatePeriod: DeduplicatePeriod | None = None


class DeduplicateConfig(OperatorConfig):
    basicConfigs: DeduplicateBasic = Field(default_factory=DeduplicateBasic)
    advanceConfigs: DeduplicateAdvance = Field(default_factory=DeduplicateAdvance)


@register
class Deduplicate(Operator[DeduplicateConfig]):
    """Drops a record when, for its key, all (AND) or any (OR) of ``deduplicateFields``
    equal those of a record seen within ``deduplicatePeriod.period`` seconds."""

    class_name = "Deduplicate"
    config_model = DeduplicateConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: DeduplicateConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        advance, basic = config.advanceConfigs, config.basicConfigs
        check_parallelism(problems, advance)
        check_positive(problems, f"{ADVANCE}.ttlTime", advance.ttlTime, "ttlTime")
        schema = _one(inputs)
        check_field_list(problems, f"{BASIC}.keyFields", schema, basic.keyFields, required=False)
        check_field_list(
            problems, f"{BASIC}.deduplicateFields", schema, basic.deduplicateFields, required=True
        )
        if basic.relationship is None:
            problems.empty(f"{BASIC}.relationship", "AND or OR")
        period, path = advance.deduplicatePeriod, f"{ADVANCE}.deduplicatePeriod"
        if period is None or period.period is None:
            problems.empty(f"{path}.period", "seconds")
        else:
            check_positive(problems, f"{path}.period", period.period, "period")
        if period is not None and period.isUseEventTime and not schema.event_time:
            problems.add(
                f"{path}.isUseEventTime",
                "the input has no event-time field (declare the source's eventTimeField)",
            )
        return schema, problems


class SelectFieldsBasic(Basic):
    selectFields: FieldList = Field(default_factory=list)


class SelectFieldsConfig(OperatorConfig):
    basicConfigs: SelectFieldsBasic = Field(default_factory=SelectFieldsBasic)


@register
class SelectFields(Operator[SelectFieldsConfig]):
    """Keeps only the listed fields, in their order."""

    class_name = "SelectFields"
    config_model = SelectFieldsConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: SelectFieldsConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema = _one(inputs)
        names = config.basicConfigs.selectFields
        fields = check_field_list(problems, f"{BASIC}.selectFields", schema, names, required=True)
        event_time = schema.event_time if schema.event_time in fields else None
        return Schema(fields, open=False, event_time=event_time), problems


class SinkFormat(StrEnum):
    JSON = "JSON"
    CSV = "CSV"
    PARQUET = "PARQUET"


class DISSinkBasic(Basic):
    dataSourceId: ShortText = Field(None, description="the data source written to")
    target: ShortText = Field(None, description="or a folder of the project's data root")
    targetJobId: ShortText = Field(
        None, description="or the job_id of another streaming job whose ingest is written to"
    )


class DISSinkAdvance(Advance):
    partitioner: ShortText = Field(None, description="the field records are partitioned by")
    format: SinkFormat | None = SinkFormat.JSON
    csvSeparator: ShortText = None


class DISSinkConfig(OperatorConfig):
    basicConfigs: DISSinkBasic = Field(default_factory=DISSinkBasic)
    advanceConfigs: DISSinkAdvance = Field(default_factory=DISSinkAdvance)


def _check_each_input(problems: Problems, path: str, inputs: Sequence[Schema], name: str) -> None:
    for schema in inputs:
        if schema.type_of(name) is None:
            problems.add(path, f"field '{name[:80]}' does not exist upstream; {schema.listing()}")
            return


@register
class DISSink(Operator[DISSinkConfig]):
    """Writes every input's records, as JSON lines, CSV or Parquet, to a data source or a
    folder of the project's data root; or, as JSON records, to another streaming job's
    ingest log (``targetJobId``)."""

    class_name = "DISSink"
    role = Role.SINK
    merge_inputs = False
    config_model = DISSinkConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: DISSinkConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        basic, advance = config.basicConfigs, config.advanceConfigs
        check_parallelism(problems, advance)
        source, target = (basic.dataSourceId or "").strip(), (basic.target or "").strip()
        job = (basic.targetJobId or "").strip()
        given = [
            name
            for name, value in (("dataSourceId", source), ("target", target), ("targetJobId", job))
            if value
        ]
        if not given:
            problems.empty(
                f"{BASIC}.dataSourceId",
                "name the data source written to, a target folder or a targetJobId",
            )
        elif len(given) > 1:
            problems.add(
                f"{BASIC}.{given[-1]}",
                f"give one of dataSourceId, target or targetJobId, not {' and '.join(given)}",
            )
        elif target and (target.startswith("/") or ".." in target.split("/")):
            problems.add(f"{BASIC}.target", "a folder relative to the project's data root")
        if advance.format is None:
            problems.empty(f"{ADVANCE}.format", "JSON, CSV or PARQUET")
        separator = advance.csvSeparator
        if advance.format == SinkFormat.CSV and separator is not None and len(separator) != 1:
            problems.add(f"{ADVANCE}.csvSeparator", "one character")
        if advance.partitioner:
            _check_each_input(problems, f"{ADVANCE}.partitioner", inputs, advance.partitioner)
        return Schema(), problems


class SMNSinkBasic(Basic):
    dataSourceId: ShortText = Field(None, description="the notification data source")
    topicUrn: ShortText = Field(None, description="the topic notified")
    messageSubject: ShortText = None
    defaultMessage: Text = Field(None, description="the message; ${field} inserts a field")
    smsMessage: Text = None
    emailMessage: Text = None
    httpMessage: Text = None
    httpsMessage: Text = None


class SMNSinkConfig(OperatorConfig):
    basicConfigs: SMNSinkBasic = Field(default_factory=SMNSinkBasic)


TEMPLATE_FIELD = re.compile(r"\$\{([^}]*)\}")


@register
class SMNSink(Operator[SMNSinkConfig]):
    """Sends a notification per record; messages insert fields as ``${field}``."""

    class_name = "SMNSink"
    role = Role.SINK
    merge_inputs = False
    config_model = SMNSinkConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: SMNSinkConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        basic = config.basicConfigs
        if not (basic.topicUrn or "").strip() and not (basic.dataSourceId or "").strip():
            problems.empty(f"{BASIC}.topicUrn", "name the topic, or a data source in dataSourceId")
        if not (basic.defaultMessage or "").strip():
            problems.empty(f"{BASIC}.defaultMessage")
        for key in (
            "messageSubject",
            "defaultMessage",
            "smsMessage",
            "emailMessage",
            "httpMessage",
            "httpsMessage",
        ):
            text = getattr(basic, key) or ""
            for name in TEMPLATE_FIELD.findall(text):
                _check_each_input(problems, f"{BASIC}.{key}", inputs, name.strip())
        return Schema(), problems


class CallFunctionGraphBasic(Basic):
    dataSourceId: ShortText = Field(None, description="the function (an HTTP data source)")
    apiParamFields: FieldList = Field(default_factory=list)
    apiOutputField: TypedField | None = None
    apiResponseCode: TypedField | None = None


class CallFunctionGraphConfig(OperatorConfig):
    basicConfigs: CallFunctionGraphBasic = Field(default_factory=CallFunctionGraphBasic)


@register
class CallFunctionGraph(Operator[CallFunctionGraphConfig]):
    """Calls a function per record with ``apiParamFields``; adds its answer
    (``apiOutputField``) and, optionally, its HTTP status (``apiResponseCode``)."""

    class_name = "CallFunctionGraph"
    config_model = CallFunctionGraphConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: CallFunctionGraphConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema, basic = _one(inputs), config.basicConfigs
        if not (basic.dataSourceId or "").strip():
            problems.empty(f"{BASIC}.dataSourceId", "the function called")
        check_field_list(
            problems, f"{BASIC}.apiParamFields", schema, basic.apiParamFields, required=True
        )
        added: dict[str, ValueType] = {}
        output, path = basic.apiOutputField, f"{BASIC}.apiOutputField"
        if output is None:
            problems.empty(path, "the field receiving the answer")
        else:
            name = check_typed_field(problems, path, output)
            if name:
                added[name] = output.type or Loose.ANY
        code, path = basic.apiResponseCode, f"{BASIC}.apiResponseCode"
        if code is not None:
            name = check_new_name(problems, f"{path}.field", code.field)
            if code.type is not None and code.type not in INTEGRAL:
                problems.add(f"{path}.type", f"an HTTP status is INTEGER or LONG, not {code.type}")
            if name and name in added:
                problems.add(f"{path}.field", f"'{name}' is also the apiOutputField")
            elif name:
                added[name] = code.type or FieldType.INTEGER
        return schema.with_fields(added), problems


# =========================================================================== the check


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
            kind = OPERATORS.get(op.className)
            self.kinds[op_id] = kind
            if not op.className.strip():
                self.report(op_id, "className: empty")
            elif kind is None:
                self.report(
                    op_id,
                    f"className: unknown operator '{op.className}'; the operators are "
                    + ", ".join(sorted(OPERATORS)),
                )
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


def check_pipeline(body: StreamingJobBody) -> CheckResult:
    """Check the whole job: graph, configurations and schemas (see the module docstring)."""
    info: CheckInfo = {}
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
    rank = {key: i for i, key in enumerate([DEFINITION, GRAPH, *graph.position])}
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
