"""The SMNSink operator: sends a notification per record."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field

from datamill.domain.streaming.operators.base import (
    BASIC,
    Basic,
    CompileError,
    Operator,
    OperatorConfig,
    Role,
    ShortText,
    Text,
    settings,
)
from datamill.domain.streaming.operators.checks import check_each_input, check_parallelism
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import SinkStep


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
    connection_types = ("notification",)
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
                check_each_input(problems, f"{BASIC}.{key}", inputs, name.strip())
        return Schema(), problems

    def compile(
        self, config: SMNSinkConfig, input_schema: Schema, output_schema: Schema
    ) -> SinkStep:
        connection = (config.basicConfigs.dataSourceId or "").strip()
        if not connection:
            raise CompileError(
                f"{self.class_name} needs dataSourceId naming a notification data source"
            )
        merged = {**settings(config.basicConfigs), **settings(config.advanceConfigs)}
        return SinkStep(connection, None, merged)
