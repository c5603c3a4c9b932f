"""The Deduplicate operator: drops records repeating a recent one."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from datamill.domain.common import Model
from datamill.domain.streaming.operators.base import (
    ADVANCE,
    BASIC,
    Basic,
    FieldList,
    Flag,
    Operator,
    OperatorConfig,
    Relationship,
    StateAdvance,
)
from datamill.domain.streaming.operators.checks import (
    check_field_list,
    check_parallelism,
    check_positive,
    one_input,
)
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import StatefulSpec


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
        schema = one_input(inputs)
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

    def compile(
        self, config: DeduplicateConfig, input_schema: Schema, output_schema: Schema
    ) -> StatefulSpec:
        return StatefulSpec(self.class_name, config, input_schema, output_schema)
