"""Result types of the client: the API's own models, a page of a list, health and version."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from datamill.domain.data_roots import DataRoot, DataRootGrant
from datamill.domain.datasources import DataSource, Preview, SchemaField
from datamill.domain.engines import EngineConnection
from datamill.domain.exports import Export, ExportHistory
from datamill.domain.exports import canonical_type as canonical_export_type
from datamill.domain.jobs import (
    Computation,
    Container,
    Job,
    JobBody,
    MisfirePolicy,
    OverlapPolicy,
    Param,
    Scheduler,
    SchedulerSpec,
    SchedulerType,
    Src,
    SrcType,
)
from datamill.domain.projects import Member, Project, Role
from datamill.domain.runs import (
    TERMINAL,
    ExportRunEntry,
    History,
    HistoryEntry,
    RerunResult,
    RunLog,
    RunResult,
    RunStatus,
    StopResult,
)
from datamill.domain.secrets import Secret
from datamill.domain.streaming import ActionResult as StreamingActionResult
from datamill.domain.streaming import IngestResult as StreamingIngestResult
from datamill.domain.streaming import JobState as StreamingJobState
from datamill.domain.streaming import (
    OperatorMetrics,
    StreamingJob,
    StreamingJobBody,
    StreamingJobSummary,
    StreamingMetrics,
)
from datamill.domain.streaming import SaveResult as StreamingSaveResult
from datamill.domain.users import IssuedToken, Principal, Token, User
from datamill.domain.variables import ResolvedVariable, Variable, VariableType

EXPORT_TYPES = ("file", "s3", "hdfs", "http", "logdb", "tsdb", "report")
"""The export kinds a server of this version knows: the keys of its sink registry, which a
client that speaks HTTP cannot import (a test keeps the two in step)."""

__all__ = [
    "EXPORT_TYPES",
    "TERMINAL",
    "Computation",
    "Container",
    "DataRoot",
    "DataRootGrant",
    "DataSource",
    "EngineConnection",
    "Export",
    "ExportHistory",
    "ExportRunEntry",
    "Health",
    "History",
    "HistoryEntry",
    "IssuedToken",
    "Job",
    "JobBody",
    "JobStopResult",
    "Member",
    "MisfirePolicy",
    "OperatorMetrics",
    "OverlapPolicy",
    "Page",
    "Param",
    "Preview",
    "Principal",
    "Project",
    "RerunResult",
    "ResolvedVariable",
    "Role",
    "RunLog",
    "RunResult",
    "RunStatus",
    "Scheduler",
    "SchedulerSpec",
    "SchedulerType",
    "SchemaField",
    "Secret",
    "Src",
    "SrcType",
    "StopResult",
    "StreamingActionResult",
    "StreamingIngestResult",
    "StreamingJob",
    "StreamingJobBody",
    "StreamingJobState",
    "StreamingJobSummary",
    "StreamingMetrics",
    "StreamingSaveResult",
    "Token",
    "User",
    "Variable",
    "VariableType",
    "Version",
    "canonical_export_type",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: ``items`` and where they sit in the whole (``total`` items).

    Iterating a page iterates its items; ``len(page)`` is the number of items on it.
    """

    total: int
    page: int
    size: int
    items: list[T] = field(default_factory=list)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def pages(self) -> int:
        """How many pages of this size the whole list has (at least 1)."""
        return max(1, -(-self.total // self.size)) if self.size > 0 else 1

    @property
    def has_next(self) -> bool:
        """Whether a later page holds more items."""
        return self.page * self.size < self.total


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Health(_Lenient):
    """``GET /health``: ``status`` is ``ok`` or ``degraded``; ``database`` ``ok`` or not."""

    status: str
    database: str


class Version(_Lenient):
    """``GET /version``: the server's version and its metadata-store dialect."""

    version: str
    database: str


class JobStopResult(_Lenient):
    """``POST .../jobs/{name}/actions/stop``: the schedule is now ``stopped``.

    ``runsAffected`` counts the runs canceled before they started and the running ones asked
    to stop.
    """

    name: str
    scheduleState: str
    runsAffected: int
