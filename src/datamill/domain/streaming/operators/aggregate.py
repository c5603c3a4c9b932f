"""The Aggregate operator: aggregates records per key over time windows."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import Field

from datamill.domain.common import Model
from datamill.domain.expressions import (
    INTEGRAL,
    NUMERIC,
    ORDERED,
    FieldType,
    Loose,
    ValueType,
    is_loose,
    is_numeric,
)
from datamill.domain.streaming.operators.base import (
    ADVANCE,
    BASIC,
    MAX_FIELDS,
    Basic,
    FieldList,
    Operator,
    OperatorConfig,
    ShortText,
    StateAdvance,
    Text,
)
from datamill.domain.streaming.operators.checks import (
    check_field_list,
    check_input_field,
    check_new_name,
    check_parallelism,
    check_positive,
    compile_or_report,
    one_input,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import StatefulSpec

WINDOW_START = "windowStart"
WINDOW_END = "windowEnd"


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
        schema, basic = one_input(inputs), config.basicConfigs
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

    def compile(
        self, config: AggregateConfig, input_schema: Schema, output_schema: Schema
    ) -> StatefulSpec:
        return StatefulSpec(self.class_name, config, input_schema, output_schema)
