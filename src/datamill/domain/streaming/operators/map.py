"""The Map operator: computes fields from expressions."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.expressions import Loose, ValueType, cast, compile_expression, fits
from datamill.domain.streaming.operators.base import (
    BASIC,
    MAX_FIELDS,
    Basic,
    Operator,
    OperatorConfig,
    Text,
    TypedField,
)
from datamill.domain.streaming.operators.checks import (
    add_field,
    check_parallelism,
    check_typed_field,
    compile_or_report,
    one_input,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import AddFields


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
        schema = one_input(inputs)
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

    def compile(self, config: MapConfig, input_schema: Schema, output_schema: Schema) -> AddFields:
        added = {}
        for mapped in config.basicConfigs.mapFieldConfig or []:
            compiled = compile_expression(mapped.expression or "", input_schema.scope)
            value = compiled.expression
            added[str(mapped.field)] = cast(value, mapped.type) if mapped.type else value
        return AddFields(input_schema, added)
