"""The ``tsdb`` export's spec."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from datamill.connectors.sinks.common import EndpointUrl, SinkSpec
from datamill.domain.common import FieldName, Name
from datamill.errors import E, field_error

Precision = Literal["ns", "us", "ms", "s"]
_DB_RULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")


def _check_key(value: str) -> str:

    if not value or len(value) > 255 or any(c in value for c in "\r\n") or value == "time":
        raise field_error(
            E.INVALID_FIELD_NAME,
            "invalid key '{value}': 1-255 characters without line breaks, not 'time'",
            {"value": value[:140]},
        )
    return value


class TsdbSpec(SinkSpec):
    endpoint: EndpointUrl = Field(description="e.g. http://influxdb:8086")
    destRepoName: str = Field(description="the database")
    series: str = Field(min_length=1, max_length=255, description="the measurement")
    tags: dict[str, FieldName] = Field(
        default_factory=dict, max_length=256, description="tag key -> job field"
    )
    fields: dict[str, FieldName] = Field(
        min_length=1, max_length=1000, description="field key -> job field"
    )
    timestamp: FieldName = Field(
        description="job field with the point's time: a date, epoch milliseconds or ISO 8601"
    )
    omitInvalid: bool = Field(False, description="skip invalid rows instead of failing")
    precision: Precision = "ms"
    batchSize: int = Field(5000, ge=1, le=100_000, description="points per request")
    timeoutSeconds: float = Field(30, gt=0, le=600)
    secret: Name | None = Field(
        None, description="a secret with 'username' and 'password' for basic authentication"
    )

    @field_validator("destRepoName")
    @classmethod
    def _database(cls, value: str) -> str:

        if not _DB_RULE.fullmatch(value):
            raise field_error(
                E.INVALID_NAME,
                "invalid database name '{value}': 1-255 letters, digits, _ . -",
                {"value": value[:140]},
            )
        return value

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:

        if any(c in value for c in "\r\n") or value.startswith("_"):
            raise field_error(
                E.INVALID_PARAMETER, "the measurement may not contain line breaks or start with _"
            )
        return value

    @field_validator("tags", "fields")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _check_key(key)
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> TsdbSpec:

        both = sorted(set(self.tags) & set(self.fields))
        if both:
            raise field_error(
                E.INVALID_PARAMETER, "'{key}' is both a tag and a field", {"key": both[0][:64]}
            )
        return self
