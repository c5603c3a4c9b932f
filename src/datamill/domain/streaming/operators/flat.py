"""The Flat operator: lifts values out of nested JSON into typed fields."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.expressions import Loose, ValueType, column, json_value, parse_path
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
    check_path,
    check_typed_field,
    one_input,
    parse_or_report,
    path_value,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import AddFields, ExplodeArray

ELEMENT = "__element"
"""The column holding the array element while a Flat with multiRecordsPath runs."""


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
        schema, basic = one_input(inputs), config.basicConfigs
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

    def compile(
        self, config: FlatConfig, input_schema: Schema, output_schema: Schema
    ) -> AddFields | ExplodeArray:
        basic = config.basicConfigs
        multi = (basic.multiRecordsPath or "").strip()
        added = {}
        for flat in basic.flatFieldConfig or []:
            ref = parse_path(flat.path or "")
            if multi:
                value = path_value(column(ELEMENT), (ref.name, *ref.keys), flat.type)
            else:
                value = path_value(column(ref.name), ref.keys, flat.type)
            added[str(flat.field)] = value
        if not multi:
            return AddFields(input_schema, added)
        array = parse_path(multi)
        exploded = Schema(dict(input_schema.fields), open=True)
        return ExplodeArray(exploded, json_value(column(array.name), array.keys), ELEMENT, added)
