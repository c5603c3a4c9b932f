"""The SelectFields operator: keeps only the listed fields."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.streaming.operators.base import (
    BASIC,
    Basic,
    FieldList,
    Operator,
    OperatorConfig,
)
from datamill.domain.streaming.operators.checks import (
    check_field_list,
    check_parallelism,
    one_input,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import SelectColumns


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
        schema = one_input(inputs)
        names = config.basicConfigs.selectFields
        fields = check_field_list(problems, f"{BASIC}.selectFields", schema, names, required=True)
        event_time = schema.event_time if schema.event_time in fields else None
        return Schema(fields, open=False, event_time=event_time), problems

    def compile(
        self, config: SelectFieldsConfig, input_schema: Schema, output_schema: Schema
    ) -> SelectColumns:
        return SelectColumns(list(config.basicConfigs.selectFields))
