"""The body of a streaming job (seed 000): its definition, operator instances and runtime."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from datamill.domain.common import DEFAULT_ENGINE, Model, number_bounds
from datamill.errors import E, field_error

MAX_OPERATORS = 200
OPERATOR_ID_RULE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ENGINES = (DEFAULT_ENGINE,)
"""The engines a streaming job can name (``engine``) when the caller gives no list."""


def _check_operator_id(value: str) -> str:
    if not OPERATOR_ID_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_STREAMING_JOB,
            "invalid operator id '{value}': 1-64 letters, digits, '_', '-', '.' or ':'",
            {"value": value[:80]},
        )
    return value


class JobType(StrEnum):
    API = "API"
    IDE = "IDE"
    IOTDA_API = "IOTDA_API"


class JobInputType(StrEnum):
    PIPELINE_DATA = "PIPELINE_DATA"
    ASSET_DATA = "ASSET_DATA"


class Definition(Model):
    jobName: str = Field(
        min_length=1,
        max_length=128,
        json_schema_extra={"pattern": r"\S"},
        description="the job's display name: any text but blank (400 E18703)",
    )
    jobDescription: str = Field("", max_length=1024)
    jobType: JobType = JobType.API
    jobInputType: JobInputType = JobInputType.PIPELINE_DATA

    @field_validator("jobName")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise field_error(E.INVALID_STREAMING_JOB, "definition.jobName is blank")
        return value


class Point(Model):
    """Where the operator is drawn in the editor; no meaning to the pipeline."""

    model_config = ConfigDict(strict=True)

    x: float
    y: float


class OperatorRef(Model):
    id: str = Field(max_length=64)


class Configs(Model):
    """An operator's configuration, free-form until the check parses it by ``className``."""

    basicConfigs: dict[str, Any] | None = None
    advanceConfigs: dict[str, Any] | None = None


class OperatorInstance(Model):
    id: str = Field(max_length=64, description="unique in the job; 1-64 of A-Z a-z 0-9 _ - . :")
    className: str = Field(max_length=64, description="the operator class, e.g. Filter")
    point: Point | None = None
    fromOperators: list[OperatorRef] | None = Field(
        None, max_length=64, description="the operators whose output this one reads"
    )
    configs: Configs | None = None

    @field_validator("id")
    @classmethod
    def _id_rule(cls, value: str) -> str:
        return _check_operator_id(value)

    @property
    def inputs(self) -> list[str]:
        return [ref.id for ref in self.fromOperators or []]


class StreamingRuntime(Model):
    """How the engine runs the job (seed 003's runtime settings); numbers and flags are
    taken as JSON numbers and booleans only (strict), never converted from strings."""

    model_config = ConfigDict(strict=True)

    parallelism: int | None = Field(None, ge=1, le=1024)
    checkpointIntervalSeconds: int | float = Field(
        10,
        ge=0.1,
        le=86400,
        json_schema_extra=number_bounds(0.1, 86400),
        description="seconds between checkpoints (fractions allowed); a file sink's output "
        "becomes visible at each checkpoint",
    )
    restartWhenException: bool = Field(False, description="restart the job when it fails")
    resumeMaxNum: int = Field(
        -1, ge=-1, le=1000, description="most restarts per hour; -1 = unlimited (not 0)"
    )
    outOfOrdernessSeconds: int = Field(
        2, ge=0, le=86400, description="event-time watermark = max event time - this"
    )

    @field_validator("resumeMaxNum")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise field_error(
                E.INVALID_STREAMING_JOB, "runtime.resumeMaxNum is -1 (unlimited) or greater than 0"
            )
        return value


class StreamingJobBody(Model):
    """The body of create and update (seed 000): an update replaces the whole job."""

    definition: Definition
    operatorInstances: list[OperatorInstance] = Field(
        default_factory=list, max_length=MAX_OPERATORS
    )
    runtime: StreamingRuntime | None = None
    engine: str = Field(
        DEFAULT_ENGINE,
        min_length=1,
        max_length=64,
        description="the engine that runs the job; checked when saving with check=true",
    )
