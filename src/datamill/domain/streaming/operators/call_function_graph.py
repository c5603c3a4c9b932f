"""The CallFunctionGraph operator: calls a function per record."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.expressions import INTEGRAL, FieldType, Loose, ValueType
from datamill.domain.streaming.operators.base import (
    BASIC,
    Basic,
    CompileError,
    FieldList,
    Operator,
    OperatorConfig,
    ShortText,
    TypedField,
    settings,
)
from datamill.domain.streaming.operators.checks import (
    check_field_list,
    check_new_name,
    check_parallelism,
    check_typed_field,
    one_input,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import TransformStep


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
    connection_types = ("function",)
    config_model = CallFunctionGraphConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: CallFunctionGraphConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        check_parallelism(problems, config.advanceConfigs)
        schema, basic = one_input(inputs), config.basicConfigs
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

    def compile(
        self, config: CallFunctionGraphConfig, input_schema: Schema, output_schema: Schema
    ) -> TransformStep:
        connection = (config.basicConfigs.dataSourceId or "").strip()
        if not connection:
            raise CompileError(f"{self.class_name} needs dataSourceId naming the function")
        return TransformStep(connection, settings(config.basicConfigs))
