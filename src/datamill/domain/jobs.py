"""Batch SQL jobs: sources, the SQL computation, container, scheduler and params."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from datamill.domain.common import DEFAULT_ENGINE, Documented, Model, Name
from datamill.domain.datasources import SchemaField
from datamill.errors import E, field_error

TABLE_NAME_RULE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,127}$")
PARAM_NAME_RULE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")
CONTAINER_RULE = re.compile(r"^(\d+)U(\d+)G$")
CONTAINER_TYPES = ("1U2G", "1U4G", "2U4G", "4U8G", "4U16G", "8U16G", "8U32G", "16U32G", "16U64G")
MAX_CONTAINER_UNITS = 100
LOOP_RULE = re.compile(r"^(\d+)([smhd])$")


def _check_table_name(value: str) -> str:
    if not TABLE_NAME_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid tableName '{value}': 1-128 letters, digits or underscores, "
            "starting with a letter",
            {"value": value[:140]},
        )
    return value


def _check_param_name(value: str) -> str:
    if not PARAM_NAME_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid param name '{value}': 1-64 letters, digits or underscores, "
            "starting with a letter or underscore",
            {"value": value[:80]},
        )
    return value


TableName = Annotated[
    str,
    AfterValidator(_check_table_name),
    Documented(TABLE_NAME_RULE.pattern, 128, "the table's name in the SQL"),
]
ParamName = Annotated[
    str, AfterValidator(_check_param_name), Documented(PARAM_NAME_RULE.pattern, 64)
]


class SrcType(StrEnum):
    DataSource = "DataSource"
    Job = "Job"


class Src(Model):
    name: Name
    type: SrcType
    tableName: TableName
    fileFilter: str | None = Field(
        None, max_length=256, description="overrides the data source's fileFilter"
    )


class ComputationType(StrEnum):
    SQL = "SQL"


class Computation(Model):
    type: ComputationType = ComputationType.SQL
    code: str = Field(min_length=1, max_length=65536)


class Container(Model):
    type: Annotated[str, WithJsonSchema({"type": "string", "enum": list(CONTAINER_TYPES)})] = Field(
        description="one of " + ", ".join(CONTAINER_TYPES) + " (else E18213); type x count "
        "may not exceed 100U (E18214)"
    )
    count: int = Field(1, ge=1, le=100)

    @model_validator(mode="after")
    def _within_limits(self) -> Container:
        if self.type not in CONTAINER_TYPES:
            raise field_error(
                E.INVALID_CONTAINER_TYPE,
                "container.type '{value}' is not one of " + ", ".join(CONTAINER_TYPES),
                {"value": self.type[:32]},
            )
        if self.units * self.count > MAX_CONTAINER_UNITS:
            raise field_error(
                E.INVALID_CONTAINER_COUNT,
                "container: {type} x {count} = {units}U exceeds the limit of 100U",
                {"type": self.type, "count": self.count, "units": self.units * self.count},
            )
        return self

    @property
    def units(self) -> int:
        match = CONTAINER_RULE.fullmatch(self.type)
        return int(match.group(1)) if match else 0

    @property
    def memory_gb(self) -> int:
        match = CONTAINER_RULE.fullmatch(self.type)
        return int(match.group(2)) * self.count if match else 0


class SchedulerType(StrEnum):
    crontab = "crontab"
    loop = "loop"
    manual = "manual"
    depend = "depend"


class MisfirePolicy(StrEnum):
    """Which of the fire times missed (more than 5 s late, e.g. while no scheduler ran) run."""

    all = "all"
    latest = "latest"
    none = "none"


class OverlapPolicy(StrEnum):
    """What fire times do while a run of the job queued by an earlier tick is active."""

    skip = "skip"
    queue = "queue"
    allow = "allow"


MAX_CATCH_UP = 100
"""The most missed fire times the ``all`` misfire policy catches up at once."""


class SchedulerSpec(Model):
    crontab: str | None = Field(None, max_length=256)
    loop: str | None = Field(None, max_length=16, description="e.g. 30s, 5m, 1h; 0 = continuous")
    timezone: str | None = Field(None, max_length=64, description="IANA zone; default UTC")
    misfire: MisfirePolicy = Field(
        MisfirePolicy.latest,
        description="fire times more than 5 s late: all (up to 100), latest (default) or "
        "none run; fire times at most 5 s late run unless overlap skips them",
    )
    overlap: OverlapPolicy = Field(
        OverlapPolicy.skip,
        description="while a run of an earlier fire time is active: skip the fire times now "
        "due (default), queue them, or allow concurrent runs",
    )


def loop_seconds(value: str | None) -> int:
    """``5m`` -> 300; empty or ``0`` -> 0 (run continuously)."""
    if value is None or value.strip() in {"", "0"}:
        return 0
    match = LOOP_RULE.fullmatch(value.strip())
    if not match:
        raise field_error(
            E.INVALID_SCHEDULE,
            "scheduler.spec.loop '{value}' must be a number with s, m, h or d",
            {"value": value[:20]},
        )
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class Scheduler(Model):
    type: SchedulerType
    spec: SchedulerSpec | None = None

    @model_validator(mode="after")
    def _spec_fits_type(self) -> Scheduler:
        spec = self.spec or SchedulerSpec()
        if self.type == SchedulerType.crontab and not spec.crontab:
            raise field_error(
                E.INVALID_SCHEDULE,
                "scheduler.spec.crontab is required when scheduler.type is crontab",
            )
        if self.type == SchedulerType.loop:
            loop_seconds(spec.loop)
        return self

    @property
    def effective_spec(self) -> SchedulerSpec:
        return self.spec or SchedulerSpec()


class Param(Model):
    name: ParamName
    default: str = Field("", max_length=64)


class JobBody(Model):
    """The body of create and update (an update replaces the whole job)."""

    srcs: list[Src] = Field(min_length=1, max_length=32)
    computation: Computation
    container: Container | None = None
    scheduler: Scheduler | None = None
    params: list[Param] | None = Field(None, max_length=64)
    retries: int = Field(0, ge=0, le=10, description="automatic retries of a failed run")
    maxRunSeconds: int | None = Field(
        None, ge=1, le=7 * 86400, description="the watchdog's limit; default: server setting"
    )
    engine: str = Field(
        DEFAULT_ENGINE,
        min_length=1,
        max_length=128,
        description=(
            "the engine that runs the job: an embedded engine of the server (duckdb, the "
            "default) or the name of one of the project's engine connections (a Spark "
            "Connect server)"
        ),
    )

    @model_validator(mode="after")
    def _seed_rules(self) -> JobBody:
        tables = [s.tableName for s in self.srcs]
        duplicates = sorted({t for t in tables if tables.count(t) > 1})
        if duplicates:
            raise field_error(
                E.INVALID_JOB, "srcs: tableName '{name}' is used twice", {"name": duplicates[0]}
            )
        names = [p.name for p in self.params or []]
        if len(names) != len(set(names)):
            raise field_error(E.INVALID_JOB, "params: a param name is used twice")
        if self.is_depend:
            job_srcs = [s for s in self.srcs if s.type == SrcType.Job]
            if len(job_srcs) != 1:
                raise field_error(E.INVALID_JOB, "a depend job has exactly one src of type Job")
            if self.container is not None or self.params:
                raise field_error(
                    E.INVALID_JOB,
                    "a depend job inherits container and params from its upstream job; "
                    "leave them out",
                )
        return self

    @property
    def is_depend(self) -> bool:
        return self.scheduler is not None and self.scheduler.type == SchedulerType.depend

    @property
    def upstream(self) -> str | None:
        if not self.is_depend:
            return None
        return next(s.name for s in self.srcs if s.type == SrcType.Job)


class ScheduleInfo(Model):
    state: str = Field(description="active, or stopped by the stop action")
    nextFireTime: datetime | None
    lastFireTime: datetime | None
    lastOutcome: str | None


class Job(JobBody):
    name: str
    schema_: list[SchemaField] = Field(alias="schema")
    scheduleState: str = Field(description="active, or stopped by the stop action")
    schedule: ScheduleInfo
    createdAt: datetime
    updatedAt: datetime


class ParamValue(Model):
    name: ParamName
    value: str = Field(max_length=64)


class StartBody(Model):
    params: list[ParamValue] = Field(default_factory=list, max_length=64)


def job_definition(body: JobBody) -> dict[str, Any]:
    """The stored form of a job body (no derived fields)."""
    return body.model_dump(mode="json", exclude_none=True)
