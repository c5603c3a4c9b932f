"""The PipelineSource operator: the records pushed into, or read by, the pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.expressions import FieldType, Loose
from datamill.domain.streaming.operators.base import (
    BASIC,
    MAX_FIELDS,
    Basic,
    Operator,
    OperatorConfig,
    Role,
    ShortText,
    TypedField,
    settings,
)
from datamill.domain.streaming.operators.checks import (
    add_field,
    check_parallelism,
    check_typed_field,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import SourceStep


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
    connection_types = ("mqtt", "kafka")
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

    def compile(
        self, config: PipelineSourceConfig, input_schema: Schema, output_schema: Schema
    ) -> SourceStep:
        basic = config.basicConfigs
        return SourceStep((basic.dataSourceId or "").strip() or None, settings(basic))
