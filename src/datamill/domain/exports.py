"""Exports: where a job's result goes after each successful run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from datamill.domain.common import Model
from datamill.domain.runs import ExportRunEntry

EXPORT_TYPES = ("file", "s3", "hdfs", "http", "logdb", "tsdb", "report")


class ExportCreate(Model):
    type: str = Field(description="one of " + ", ".join(EXPORT_TYPES))
    spec: dict[str, Any]


class ExportUpdate(Model):
    """An update replaces the spec; the type stays."""

    spec: dict[str, Any]


class Export(Model):
    name: str
    type: str
    spec: dict[str, Any]
    createdAt: datetime
    updatedAt: datetime


class ExportHistory(Model):
    total: int
    page: int
    size: int
    history: list[ExportRunEntry]


class ExportRerun(Model):
    runId: int = Field(ge=-1, le=2**31 - 1, description="the job run whose batch to export")
