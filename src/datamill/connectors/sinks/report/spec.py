"""The ``report`` export's spec."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from datamill.connectors.sinks.common import SinkSpec
from datamill.domain.common import Name
from datamill.errors import E, field_error

BATCH_COLUMN = "_datamill_batch"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_TABLE_RULE = re.compile(rf"^(?:{_IDENT}\.)?{_IDENT}$")
_COLUMN_RULE = re.compile(rf"^{_IDENT}$")


class ReportSpec(SinkSpec):
    secret: Name = Field(description="a secret whose value 'url' is the database's URL")
    dbName: str | None = Field(None, max_length=128, description="the database (informational)")
    tableName: str = Field(description="the table, optionally schema-qualified: schema.table")
    columns: dict[str, str] = Field(
        min_length=1, max_length=1000, description="table column -> job field"
    )
    saveMode: Literal["overwrite", "append"] = "overwrite"
    batchSize: int = Field(1000, ge=1, le=100_000, description="rows per INSERT")
    timeoutSeconds: float = Field(30, gt=0, le=600, description="connect timeout")

    @field_validator("tableName")
    @classmethod
    def _table(cls, value: str) -> str:

        if not _TABLE_RULE.fullmatch(value):
            raise field_error(
                E.INVALID_NAME,
                "invalid table name '{value}': [schema.]table, each 1-63 letters, digits or "
                "underscores, starting with a letter or underscore",
                {"value": value[:140]},
            )
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str]) -> dict[str, str]:

        for column in value:
            if not _COLUMN_RULE.fullmatch(column) or column.lower() == BATCH_COLUMN:
                raise field_error(
                    E.INVALID_FIELD_NAME,
                    "invalid column name '{value}': 1-63 letters, digits or underscores, "
                    "starting with a letter or underscore, not " + BATCH_COLUMN,
                    {"value": column[:140]},
                )
        return value
