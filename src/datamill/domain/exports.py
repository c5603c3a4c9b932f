"""Exports: where a job's result goes after each successful run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from datamill.domain.common import Model
from datamill.domain.runs import ExportRunEntry

EXPORT_TYPE_ALIASES = {"kodo": "s3"}
"""Other names of a type: the specification's ``kodo`` (its object storage) is ``s3`` here.

An export created with an alias is stored and returned under the type's own name, so lists,
filters and updates see one name per kind of destination.
"""


def canonical_type(name: str) -> str:
    """The type an export type name stands for (``kodo`` -> ``s3``); others unchanged."""
    return EXPORT_TYPE_ALIASES.get(name, name)


class ExportCreate(Model):
    type: str = Field(
        max_length=32,
        description="the export kind: one of the registered sinks (an unknown kind is "
        "refused with their list); kodo is accepted for s3 and stored as s3",
    )
    spec: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return canonical_type(value)


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
