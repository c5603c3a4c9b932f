"""Runs: the unit of execution, and the one state machine every run follows.

::

    Ready ──claim──▶ Running ──▶ Successful | Failed
      │                 │ stop
      │                 ▼
      │             Cancelling ──▶ Canceled
      │                               │
      └─job stop─▶ Canceled           │
    Successful | Failed | Canceled ──rerun──▶ Restarting ──claim──▶ Running

A Running run whose worker vanished (no heartbeat) becomes Failed, or Ready again while
it has retries left; a Cancelling one becomes Canceled.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from datamill.domain.common import Model, Name
from datamill.errors import DatamillError, E

HistorySort = Literal[
    "endTime", "-endTime", "startTime", "-startTime", "batchTime", "-batchTime", "runId", "-runId"
]
"""The orders of a job's run history: a field, with ``-`` for descending."""


class RunStatus(StrEnum):
    Ready = "Ready"
    Running = "Running"
    Successful = "Successful"
    Failed = "Failed"
    Canceled = "Canceled"
    Restarting = "Restarting"
    Cancelling = "Cancelling"


TERMINAL = frozenset({RunStatus.Successful, RunStatus.Failed, RunStatus.Canceled})
CLAIMABLE = frozenset({RunStatus.Ready, RunStatus.Restarting})
ACTIVE = frozenset({RunStatus.Running, RunStatus.Cancelling})

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.Ready: frozenset({RunStatus.Running, RunStatus.Canceled}),
    RunStatus.Restarting: frozenset({RunStatus.Running, RunStatus.Canceled}),
    RunStatus.Running: frozenset(
        {RunStatus.Successful, RunStatus.Failed, RunStatus.Cancelling, RunStatus.Ready}
    ),
    RunStatus.Cancelling: frozenset({RunStatus.Canceled}),
    RunStatus.Successful: frozenset({RunStatus.Restarting}),
    RunStatus.Failed: frozenset({RunStatus.Restarting}),
    RunStatus.Canceled: frozenset({RunStatus.Restarting}),
}


def allowed(before: RunStatus, after: RunStatus) -> bool:
    return after in TRANSITIONS[before]


def check_stop(status: RunStatus, job: str, run_id: int) -> RunStatus:
    """The state a stop request moves a run to; only a Running run can be stopped."""
    if status != RunStatus.Running:
        raise DatamillError(
            E.RUN_STATE_CONFLICT,
            f"run {run_id} of job '{job}' is {status.value}; only a Running run can be stopped",
        )
    return RunStatus.Cancelling


def check_rerun(status: RunStatus, job: str, run_id: int) -> RunStatus:
    """The state a rerun request moves a run to; only finished runs can be rerun."""
    if status not in TERMINAL:
        hint = " (stop it first)" if status == RunStatus.Running else ""
        raise DatamillError(
            E.RUN_STATE_CONFLICT,
            f"run {run_id} of job '{job}' is {status.value}; only a Successful, Failed or "
            f"Canceled run can be rerun{hint}",
        )
    return RunStatus.Restarting


class ExportRunEntry(Model):
    """One export of one batch (an export run)."""

    export: str
    runId: int
    batchTime: datetime
    status: RunStatus
    message: str
    attempt: int
    rerunCount: int
    rowsWritten: int | None
    bytesWritten: int | None
    startTime: datetime | None
    endTime: datetime | None


class HistoryEntry(Model):
    runId: int
    batchTime: datetime
    startTime: datetime | None
    endTime: datetime | None
    duration: float | None
    status: RunStatus
    message: str
    rerunCount: int
    attempt: int
    rowsRead: int | None
    rowsWritten: int | None
    bytesRead: int | None
    bytesWritten: int | None
    exports: list[ExportRunEntry] = Field(
        default_factory=list, description="the export runs of this batch"
    )


class History(Model):
    total: int
    page: int
    size: int
    history: list[HistoryEntry]


RUN_ID_TEXT = re.compile(r"-1|[0-9]{1,9}")
"""A run id written as text, as the specification's stop and rerun bodies send it."""


def _run_id_of_text(value: object) -> object:
    return int(value) if isinstance(value, str) and RUN_ID_TEXT.fullmatch(value) else value


RunIdOrText = Annotated[
    int,
    BeforeValidator(_run_id_of_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": -1, "maximum": 2**31 - 1},
                {"type": "string", "pattern": f"^({RUN_ID_TEXT.pattern})$"},
            ],
            "description": "the run; -1 = the job's latest. A JSON integer, or its digits "
            'as a string ("12"), as the specification sends it',
        }
    ),
]


class RunAction(Model):
    jobName: Name
    runId: RunIdOrText = Field(ge=-1, le=2**31 - 1)


class StopResult(Model):
    preStatus: RunStatus
    postStatus: RunStatus


class RerunResult(StopResult):
    rerunCount: int


class RunLog(Model):
    runId: int
    lines: list[str]


class RunResult(Model):
    runId: int
    rows: list[dict[str, object]]
    rowsWritten: int | None
