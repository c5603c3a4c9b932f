"""The Filter operator: keeps the records meeting its conditions."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.common import Model
from datamill.domain.expressions import (
    Compiled,
    ExpressionError,
    Symbol,
    combine,
    compile_condition,
)
from datamill.domain.streaming.operators.base import (
    BASIC,
    Basic,
    Operator,
    OperatorConfig,
    Relationship,
    Scalar,
    Text,
)
from datamill.domain.streaming.operators.checks import check_parallelism, one_input
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import KeepRecords


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
        schema = one_input(inputs)
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

    def compile(
        self, config: FilterConfig, input_schema: Schema, output_schema: Schema
    ) -> KeepRecords:
        conditions = self.conditions(Problems(), input_schema, config)
        relationship = config.basicConfigs.conditionRelationship or Relationship.AND
        return KeepRecords(combine(conditions, relationship))
