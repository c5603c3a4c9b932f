"""What the API answers about streaming jobs: save and action results, the job, metrics."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from datamill.domain.common import DEFAULT_ENGINE, Model
from datamill.domain.streaming.jobs import (
    Definition,
    JobInputType,
    JobType,
    OperatorInstance,
    StreamingRuntime,
)
from datamill.domain.streaming.states import JobState

CheckInfo = dict[str, list[str]]


class SaveResult(Model):
    """The answer to create and update (seed 000)."""

    job_id: str = Field(min_length=1, max_length=100)
    job_state: JobState
    status: str = Field(description="success, or failed when the check found problems")
    check_info: CheckInfo = Field(
        description="operator id (or $graph, $definition) -> its problems; empty when the "
        "job checked without problems or was saved as a draft"
    )


class ActionResult(Model):
    job_id: str
    job_state: JobState
    status: str = Field(description="success")


class StreamingJob(Model):
    job_id: str
    job_state: JobState
    definition: Definition
    operatorInstances: list[OperatorInstance]
    runtime: StreamingRuntime
    engine: str = Field(DEFAULT_ENGINE, description="the engine that runs the job")
    check_info: CheckInfo = Field(description="the problems found by the last check")
    stateMessage: str | None = Field(None, description="why the job is in its state")
    createdAt: datetime
    updatedAt: datetime
    stateChangedAt: datetime
    startedAt: datetime | None
    stoppedAt: datetime | None


class IngestResult(Model):
    job_id: str
    accepted: int = Field(description="the records appended to the job's ingest log")


class CheckpointInfo(Model):
    epoch: int
    time: datetime | None


class OperatorMetrics(Model):
    className: str
    recordsIn: int
    recordsOut: int
    stateRows: int | None = None
    lateRecords: int | None = None


class SourceMetrics(Model):
    lag: int | None = Field(description="records available but not yet read (estimate)")
    position: dict[str, Any] | None = None


class StreamingMetrics(Model):
    """What the engine last reported (about once a second and at every checkpoint)."""

    job_id: str
    job_state: JobState
    epoch: int | None = Field(None, description="the checkpoint epoch being processed")
    batches: int = Field(0, description="micro-batches since the engine process started")
    watermark: datetime | None = None
    maxEventTime: datetime | None = None
    lateRecords: int = 0
    stateRows: int = 0
    stateBytes: int = Field(0, description="size of the job's state database")
    lastCheckpoint: CheckpointInfo | None = None
    operators: dict[str, OperatorMetrics] = Field(default_factory=dict)
    sources: dict[str, SourceMetrics] = Field(default_factory=dict)
    updatedAt: datetime | None = Field(None, description="when the engine wrote these figures")


class JobSort(StrEnum):
    """List orders: a field, with ``-`` for descending."""

    createdAt = "createdAt"
    createdAtDesc = "-createdAt"
    updatedAt = "updatedAt"
    updatedAtDesc = "-updatedAt"
    jobName = "jobName"
    jobNameDesc = "-jobName"


class StreamingJobSummary(Model):
    job_id: str
    jobName: str
    jobType: JobType
    jobInputType: JobInputType
    job_state: JobState
    createdAt: datetime
    updatedAt: datetime
