"""The DISSink operator: writes records to a data source, a folder or another job."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import Field

from datamill.domain.streaming.operators.base import (
    ADVANCE,
    BASIC,
    Advance,
    Basic,
    Operator,
    OperatorConfig,
    Role,
    ShortText,
    settings,
)
from datamill.domain.streaming.operators.checks import check_each_input, check_parallelism
from datamill.domain.streaming.operators.registry import register
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import SinkStep

FOLDER_SINK = "folder"
"""The built-in sink writing files under the project's data root (``target``)."""
JOB_SINK = "job"
"""The built-in sink appending to another streaming job's ingest log (``targetJobId``)."""


class SinkFormat(StrEnum):
    JSON = "JSON"
    CSV = "CSV"
    PARQUET = "PARQUET"


class DISSinkBasic(Basic):
    dataSourceId: ShortText = Field(None, description="the data source written to")
    target: ShortText = Field(None, description="or a folder of the project's data root")
    targetJobId: ShortText = Field(
        None, description="or the job_id of another streaming job whose ingest is written to"
    )


class DISSinkAdvance(Advance):
    partitioner: ShortText = Field(None, description="the field records are partitioned by")
    format: SinkFormat | None = SinkFormat.JSON
    csvSeparator: ShortText = None


class DISSinkConfig(OperatorConfig):
    basicConfigs: DISSinkBasic = Field(default_factory=DISSinkBasic)
    advanceConfigs: DISSinkAdvance = Field(default_factory=DISSinkAdvance)


@register
class DISSink(Operator[DISSinkConfig]):
    """Writes every input's records, as JSON lines, CSV or Parquet, to a data source or a
    folder of the project's data root; or, as JSON records, to another streaming job's
    ingest log (``targetJobId``)."""

    class_name = "DISSink"
    role = Role.SINK
    merge_inputs = False
    connection_types = ("mqtt", "kafka")
    config_model = DISSinkConfig

    def output_schema(
        self, inputs: Sequence[Schema], config: DISSinkConfig
    ) -> tuple[Schema, Problems]:
        problems = Problems()
        basic, advance = config.basicConfigs, config.advanceConfigs
        check_parallelism(problems, advance)
        source, target = (basic.dataSourceId or "").strip(), (basic.target or "").strip()
        job = (basic.targetJobId or "").strip()
        given = [
            name
            for name, value in (("dataSourceId", source), ("target", target), ("targetJobId", job))
            if value
        ]
        if not given:
            problems.empty(
                f"{BASIC}.dataSourceId",
                "name the data source written to, a target folder or a targetJobId",
            )
        elif len(given) > 1:
            problems.add(
                f"{BASIC}.{given[-1]}",
                f"give one of dataSourceId, target or targetJobId, not {' and '.join(given)}",
            )
        elif target and (target.startswith("/") or ".." in target.split("/")):
            problems.add(f"{BASIC}.target", "a folder relative to the project's data root")
        if advance.format is None:
            problems.empty(f"{ADVANCE}.format", "JSON, CSV or PARQUET")
        separator = advance.csvSeparator
        if advance.format == SinkFormat.CSV and separator is not None and len(separator) != 1:
            problems.add(f"{ADVANCE}.csvSeparator", "one character")
        if advance.partitioner:
            check_each_input(problems, f"{ADVANCE}.partitioner", inputs, advance.partitioner)
        return Schema(), problems

    def compile(
        self, config: DISSinkConfig, input_schema: Schema, output_schema: Schema
    ) -> SinkStep:
        basic = config.basicConfigs
        merged = {**settings(basic), **settings(config.advanceConfigs)}
        connection = (basic.dataSourceId or "").strip()
        if connection:
            return SinkStep(connection, None, merged)
        kind = JOB_SINK if (basic.targetJobId or "").strip() else FOLDER_SINK
        return SinkStep(None, kind, merged)
