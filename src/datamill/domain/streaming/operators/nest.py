"""The Nest operator: builds one MAP field from fields, paths and constants."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import Field
from sqlglot import exp

from datamill.domain.common import Model
from datamill.domain.expressions import FieldType, column, constant, parse_path, sql_type, string
from datamill.domain.streaming.operators.base import (
    BASIC,
    MAX_FIELDS,
    Basic,
    CompileError,
    Operator,
    OperatorConfig,
    Scalar,
    ShortText,
)
from datamill.domain.streaming.operators.checks import (
    check_input_field,
    check_new_name,
    check_parallelism,
    check_path,
    one_input,
    path_value,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import AddFields


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
        schema, nest = one_input(inputs), config.basicConfigs.nestFieldConfig
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

    def compile(self, config: NestConfig, input_schema: Schema, output_schema: Schema) -> AddFields:
        nest = config.basicConfigs.nestFieldConfig
        if nest is None:
            raise CompileError("nestFieldConfig is empty")
        tree: dict[str, Any] = {}
        for item in nest.nestFields or []:
            keys = str(item.path).split(".")
            value: exp.Expr
            if item.type == NestValueType.CONSTANT:
                value = constant(item.value)
            elif item.type == NestValueType.FIELD:
                value = column(str(item.value))
            else:
                ref = parse_path(str(item.value))
                value = path_value(column(ref.name), ref.keys, FieldType.MAP)
            node = tree
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
        nested = exp.Cast(this=_json_object(tree), to=sql_type(FieldType.MAP))
        return AddFields(input_schema, {str(nest.field): nested})


def _json_object(node: dict[str, Any]) -> exp.Expr:
    pairs = [
        exp.JSONKeyValue(
            this=string(key),
            expression=_json_object(value) if isinstance(value, dict) else value,
        )
        for key, value in node.items()
    ]
    return exp.JSONObject(expressions=pairs)
